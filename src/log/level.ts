// Log levels, below both the logger and the journal output (which maps them to syslog priorities).
export type Level = 'error' | 'warn' | 'info' | 'debug';

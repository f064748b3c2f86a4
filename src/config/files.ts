// Every file and directory a config names, with its key path: what `check-config` and
// `doctor` check for existence and readability before the daemon trips over them at run time.
import type { Config } from './schema.js';

export interface NamedPath {
  /** Key path as problems print it (listeners[1].certFile). */
  key: string;
  path: string;
  /** 'read': a file the daemon reads; 'write': a directory it writes in. */
  need: 'read' | 'write';
}

export function namedPaths(cfg: Config): NamedPath[] {
  const out: NamedPath[] = [{ key: 'stateDir', path: cfg.stateDir, need: 'write' }];
  const add = (key: string, path: string | null | undefined) => {
    if (path) out.push({ key, path, need: 'read' });
  };
  cfg.listeners.forEach((l, i) => {
    add(`listeners[${i}].certFile`, l.certFile);
    add(`listeners[${i}].keyFile`, l.keyFile);
  });
  cfg.accounts.forEach((a, i) => {
    const o = a.oauth as Partial<Record<'clientFile' | 'clientSecretFile' | 'keyFile' | 'certificateFile' | 'privateKeyFile' | 'caFile', string>>;
    for (const k of ['clientFile', 'clientSecretFile', 'keyFile', 'certificateFile', 'privateKeyFile', 'caFile'] as const) add(`accounts[${i}].oauth.${k}`, o[k]);
    add(`accounts[${i}].upstream.caFile`, a.upstream.caFile);
  });
  add('tokens.encryptionKeyFile', cfg.tokens.encryptionKeyFile);
  add('http.certFile', cfg.http.certFile);
  add('http.keyFile', cfg.http.keyFile);
  add('alerts.caFile', cfg.alerts.caFile);
  return out;
}

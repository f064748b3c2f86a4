// Every file and directory a config names, with its key path: what `check-config` and
// `doctor` check for existence and readability before the daemon trips over them at run time.
// Works on a validated Config and on the raw YAML of one that failed validation, so
// check-config reports missing files in the same run as the schema's problems.

export interface NamedPath {
  /** Key path as problems print it (listeners[1].certFile). */
  key: string;
  path: string;
  /** 'read': a file the daemon reads; 'write': a directory it writes in. */
  need: 'read' | 'write';
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** `abs` resolves a path the way the loader does (relative to the config file); a Config's are absolute already. */
export function namedPaths(cfg: object, abs: (p: string) => string = (p) => p): NamedPath[] {
  const c = cfg as Obj;
  const out: NamedPath[] = [];
  const add = (key: string, path: unknown, need: NamedPath['need'] = 'read') => {
    if (typeof path === 'string' && path) out.push({ key, path: abs(path), need });
  };
  add('stateDir', c.stateDir, 'write');
  list(c.listeners).forEach((l, i) => {
    add(`listeners[${i}].certFile`, obj(l).certFile);
    add(`listeners[${i}].keyFile`, obj(l).keyFile);
  });
  list(c.accounts).forEach((a, i) => {
    const o = obj(obj(a).oauth);
    for (const k of [
      'clientFile',
      'clientSecretFile',
      'keyFile',
      'certificateFile',
      'privateKeyFile',
      'caFile',
    ] as const)
      add(`accounts[${i}].oauth.${k}`, o[k]);
    add(`accounts[${i}].upstream.caFile`, obj(obj(a).upstream).caFile);
  });
  add('tokens.encryptionKeyFile', obj(c.tokens).encryptionKeyFile);
  add('http.certFile', obj(c.http).certFile);
  add('http.keyFile', obj(c.http).keyFile);
  add('alerts.caFile', obj(c.alerts).caFile);
  return out;
}

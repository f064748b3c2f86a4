// Reads the YAML config, expands ${ENV} in strings and validates it.
// Every problem is reported with its key path, so `check-config` can print them all at once.
import { providerFor } from '../providers/index.js';
import { readFileSync } from 'node:fs';
import { resolve, dirname, isAbsolute } from 'node:path';
import { parseDocument } from 'yaml';
import { configSchema, type Config } from './schema.js';
import { readGoogleClientFile } from './clientFile.js';
import { namedPaths, type NamedPath } from './files.js';

export interface ConfigProblem {
  path: string;
  message: string;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
    /** The files an invalid config names (resolved), so check-config can check them in the same run. */
    readonly namedFiles: NamedPath[] = [],
  ) {
    super(
      problems.length === 1 && !problems[0].path
        ? `${file}: ${problems[0].message}`
        : `${file}: invalid config:\n` + problems.map((p) => `  ${p.path || '(top)'}: ${p.message}`).join('\n'),
    );
    this.name = 'ConfigError';
  }
}

function pathString(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/** Replaces ${VAR} in every string value; unknown variables are problems, not empty strings. */
function expandEnv(
  value: unknown,
  path: (string | number)[],
  env: NodeJS.ProcessEnv,
  problems: ConfigProblem[],
): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
      const v = env[name];
      if (v === undefined) {
        problems.push({ path: pathString(path), message: `environment variable ${name} is not set` });
        return '';
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, [...path, i], env, problems));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = expandEnv(v, [...path, k], env, problems);
    return out;
  }
  return value;
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message.split('\n')[0]}` })),
    );
  }
  const problems: ConfigProblem[] = [];
  const raw = expandEnv(doc.toJS(), [], env, problems);
  // Relative paths in the file are relative to the file, like nginx and Postfix do.
  const base = dirname(resolve(file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  applyClientFiles(raw, abs, problems);
  const parsed = configSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const message = issue.message;
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys)
          problems.push({ path: pathString([...issue.path, key]), message: unknownKeyMessage(issue.path, key) });
        continue;
      }
      problems.push({ path: pathString(issue.path), message });
    }
  }
  if (problems.length) throw new ConfigError(file, problems, namedPaths(raw ?? {}, abs));
  const cfg = parsed.data!;
  cfg.stateDir = abs(cfg.stateDir);
  for (const l of cfg.listeners) {
    if (l.certFile) l.certFile = abs(l.certFile);
    if (l.keyFile) l.keyFile = abs(l.keyFile);
  }
  for (const a of cfg.accounts) {
    if (a.upstream.caFile) a.upstream.caFile = abs(a.upstream.caFile);
    if (a.oauth.caFile) a.oauth.caFile = abs(a.oauth.caFile);
    if (a.oauth.type === 'user' && a.oauth.clientSecretFile) a.oauth.clientSecretFile = abs(a.oauth.clientSecretFile);
    if (a.oauth.type === 'service-account') a.oauth.keyFile = abs(a.oauth.keyFile);
    if (a.oauth.type === 'app') {
      if (a.oauth.clientSecretFile) a.oauth.clientSecretFile = abs(a.oauth.clientSecretFile);
      if (a.oauth.certificateFile) a.oauth.certificateFile = abs(a.oauth.certificateFile);
      if (a.oauth.privateKeyFile) a.oauth.privateKeyFile = abs(a.oauth.privateKeyFile);
    }
  }
  if (cfg.tokens.encryptionKeyFile) cfg.tokens.encryptionKeyFile = abs(cfg.tokens.encryptionKeyFile);
  if (cfg.http.certFile) cfg.http.certFile = abs(cfg.http.certFile);
  if (cfg.http.keyFile) cfg.http.keyFile = abs(cfg.http.keyFile);
  if (cfg.alerts.caFile) cfg.alerts.caFile = abs(cfg.alerts.caFile);
  return cfg;
}

/** "unknown key", with the fix for keys people write by mistake (a plaintext password). */
function unknownKeyMessage(path: ReadonlyArray<PropertyKey>, key: string): string {
  if (path.length === 2 && path[0] === 'users' && /^pass(word)?$/i.test(key))
    return (
      'unknown key: users take passwordHash, not a plaintext password; put the output of `xoauth2-bridge hash-password` in passwordHash and remove ' +
      key
    );
  return 'unknown key';
}

/**
 * accounts[].oauth.clientFile (Google's downloaded client JSON) fills in clientId,
 * clientSecret, tokenUrl and authUrl before validation; keys set beside it must not contradict it.
 */
function applyClientFiles(raw: unknown, abs: (p: string) => string, problems: ConfigProblem[]): void {
  const accounts = (raw as { accounts?: unknown })?.accounts;
  if (!Array.isArray(accounts)) return;
  accounts.forEach((a: Record<string, unknown> | null, i) => {
    const o = a?.oauth as Record<string, unknown> | undefined;
    if (!o || typeof o !== 'object' || typeof o.clientFile !== 'string') return;
    const at = (k: string) => `accounts[${i}].oauth.${k}`;
    const clientFile = providerFor(a as { provider?: string }).clientFile;
    if (clientFile !== true) {
      problems.push({ path: at('clientFile'), message: clientFile });
      return;
    }
    const file = abs(o.clientFile);
    o.clientFile = file;
    const conflicts = ['clientSecret', 'clientSecretFile'].filter((k) => o[k] !== undefined);
    for (const k of conflicts)
      problems.push({ path: at(k), message: `clientFile carries the client secret: remove ${k}` });
    // After a problem, stand-ins keep the schema from adding "clientId: required" beside it.
    if (conflicts.length) {
      o.clientId ??= '-';
      return;
    }
    let c;
    try {
      c = readGoogleClientFile(file);
    } catch (e) {
      problems.push({ path: at('clientFile'), message: (e as Error).message });
      o.clientId ??= '-';
      o.clientSecret = '-';
      return;
    }
    if (o.clientId !== undefined && o.clientId !== c.clientId)
      problems.push({
        path: at('clientId'),
        message: `differs from client_id in clientFile (${c.clientId}): remove clientId`,
      });
    o.clientId = c.clientId;
    o.clientSecret = c.clientSecret;
    if (c.tokenUrl) o.tokenUrl ??= c.tokenUrl;
    if (c.authUrl) o.authUrl ??= c.authUrl;
  });
}

export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, [
      { path: '', message: `cannot read config file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` },
    ]);
  }
  return parseConfig(text, file, env);
}

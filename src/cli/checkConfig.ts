// `check-config` and `doctor`: after the schema (src/config/schema.ts), what only shows at run
// time: named files that are missing or unreadable by the user the daemon runs as, a stateDir
// it cannot write, and (doctor) a token store without a usable grant. Exit 0 ok, 2 problems.
import { existsSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, loadConfig, type ConfigProblem } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { namedPaths, type NamedPath } from '../config/files.js';
import { TokenStore, resolveStoreKey, STORE_FILE } from '../oauth/store.js';
import { lookupUser, groupName, probeAccess, shellQuote, type SystemUser } from './users.js';
import { asServiceUser } from './rootGuard.js';
import { probeUpstreams } from './upstreamProbe.js';

type Out = NodeJS.WritableStream;

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

function describe(st: Stats): string {
  return `mode ${(st.mode & 0o777).toString(8).padStart(4, '0')} ${lookupUser(st.uid)?.name ?? st.uid}:${groupName(st.gid) ?? st.gid}`;
}

/** Problems with the files the config names, as `user` (null: this process) would meet them. */
export function fileProblems(cfg: Config, configFile: string, user: SystemUser | null): ConfigProblem[] {
  return pathProblems(namedPaths(cfg), configFile, user);
}

function pathProblems(named: NamedPath[], configFile: string, user: SystemUser | null): ConfigProblem[] {
  const who = user ? `user ${user.name}` : 'this user';
  const group = user ? (groupName(user.gid) ?? String(user.gid)) : null;
  const paths: NamedPath[] = [{ key: 'config file', path: configFile, need: 'read' }, ...named];
  const problems: ConfigProblem[] = [];
  const present = paths.filter((p) => {
    if (statOrNull(p.path)) return true;
    // A missing stateDir is made by the daemon (and by systemd's StateDirectory=).
    if (p.need === 'read') problems.push({ path: p.key, message: `${p.path} does not exist` });
    return false;
  });
  const ok = probeAccess(user, present);
  present.forEach((p, i) => {
    if (ok[i]) return;
    const st = statSync(p.path);
    if (p.need === 'write') {
      const fix = user ? `: chown -R ${user.name}: ${p.path}` : '';
      problems.push({
        path: p.key,
        message: st.isDirectory()
          ? `${who} cannot write in ${p.path} (${describe(st)})${fix}`
          : `${p.path} is not a directory`,
      });
    } else if (!st.isFile()) {
      problems.push({ path: p.key, message: `${p.path} is not a regular file` });
    } else {
      // The token key must stay private to the daemon's user (the store refuses a group-readable key).
      const fix = !user
        ? ''
        : p.key === 'tokens.encryptionKeyFile'
          ? `: chown ${user.name} ${p.path} && chmod 0600 ${p.path}`
          : `: chgrp ${group} ${p.path} && chmod 0640 ${p.path}`;
      problems.push({
        path: p.key,
        message: `${who} cannot read ${p.path} (${describe(st)}, or a directory above it is closed to it)${fix}`,
      });
    }
  });
  return problems;
}

/** Whether the packaged unit is installed: then the daemon's commands run through systemd. */
export function systemdUnitInstalled(env: NodeJS.ProcessEnv = process.env): boolean {
  // $SYSTEMD_UNIT_PATH replaces systemd's own search path when set (systemd.unit(5)).
  const dirs = env.SYSTEMD_UNIT_PATH
    ? env.SYSTEMD_UNIT_PATH.split(':').filter(Boolean)
    : [
        '/etc/systemd/system',
        '/run/systemd/system',
        '/usr/local/lib/systemd/system',
        '/usr/lib/systemd/system',
        '/lib/systemd/system',
      ];
  return dirs.some((d) => existsSync(join(d, 'xoauth2-bridge.service')));
}

/**
 * Accounts that cannot get a token: no grant stored, or one the provider refused. `command`
 * turns CLI arguments into the command line the operator can run (as the daemon's user).
 */
async function tokenProblems(
  cfg: Config,
  notes: string[],
  command: (argv: string[]) => string,
): Promise<ConfigProblem[]> {
  const file = join(cfg.stateDir, STORE_FILE);
  let accounts: Record<string, { refreshToken?: string; state?: string; lastError?: string }> = {};
  if (statOrNull(file)) {
    try {
      accounts = (
        await new TokenStore({ stateDir: cfg.stateDir, key: resolveStoreKey(cfg.tokens.encryptionKeyFile) }).load()
      ).accounts;
    } catch (e) {
      // The .deb's key is a systemd credential: only the unit sees $CREDENTIALS_DIRECTORY.
      if (/no key is configured/.test((e as Error).message) && !process.env.CREDENTIALS_DIRECTORY) {
        notes.push(
          `token store ${file} is encrypted with the unit's credential; not opened here (\`token status\` shows the daemon's view)`,
        );
        return [];
      }
      return [{ path: 'stateDir', message: (e as Error).message }];
    }
  }
  const problems: ConfigProblem[] = [];
  cfg.accounts.forEach((a, i) => {
    if (a.oauth.type !== 'user') return; // service accounts and app-only sign in with their key
    const r = accounts[a.name];
    if (!r?.refreshToken)
      problems.push({
        path: `accounts[${i}]`,
        message: `no grant stored for account ${a.name}: run \`${command(['authorize', a.name])}\` (or \`${command(['token', 'import', a.name])}\` with the refresh token on stdin)`,
      });
    else if (r.state === 'needs-reauth')
      problems.push({
        path: `accounts[${i}]`,
        message: `account ${a.name} needs re-authorization (${r.lastError ?? 'grant refused'}): run \`${command(['authorize', a.name])}\``,
      });
  });
  return problems;
}

/** The user named by --as-user, with the errors an operator can act on. */
function resolveUser(name: string): SystemUser {
  const user = lookupUser(name);
  if (!user) throw new ConfigError('--as-user', [{ path: '', message: `no user named "${name}"` }]);
  if (user.uid !== process.getuid?.() && process.getuid?.() !== 0)
    throw new ConfigError('--as-user', [
      { path: '', message: `checking as user ${name} needs root: run it with sudo, or as ${name} without --as-user` },
    ]);
  return user;
}

/** Problems that are not config errors, under their own heading. */
interface Section {
  heading: string;
  problems: ConfigProblem[];
}

function report(
  configFile: string,
  problems: ConfigProblem[],
  notes: string[],
  okLine: string,
  out: Out,
  err: Out,
  sections: Section[] = [],
): number {
  for (const n of notes) err.write(`note: ${n}\n`);
  if (problems.length) err.write(new ConfigError(configFile, problems).message + '\n');
  for (const s of sections)
    if (s.problems.length)
      err.write(
        `${configFile}: ${s.heading}:\n` + s.problems.map((p) => `  ${p.path}: ${p.message}`).join('\n') + '\n',
      );
  if (problems.length || sections.some((s) => s.problems.length)) return 2;
  out.write(`${configFile}: ok (${okLine})\n`);
  return 0;
}

/**
 * Loads the config for check-config/doctor. An invalid one is reported together with the
 * problems of the files it names (missing, unreadable), so one run shows everything to fix.
 */
export function loadForCheck(configFile: string, asUser: string | undefined): Config {
  try {
    return loadConfig(configFile);
  } catch (e) {
    if (!(e instanceof ConfigError) || !e.namedFiles.length) throw e;
    const user = asUser ? resolveUser(asUser) : null;
    // A key the schema already complained about (e.g. an unreadable clientFile) is said once.
    const said = new Set(e.problems.map((p) => p.path));
    const files = pathProblems(e.namedFiles, configFile, user).filter((p) => !said.has(p.path));
    throw new ConfigError(configFile, [...e.problems, ...files]);
  }
}

export function checkConfigCommand(
  cfg: Config,
  configFile: string,
  opts: { asUser?: string },
  out: Out,
  err: Out,
): number {
  const user = opts.asUser ? resolveUser(opts.asUser) : null;
  const problems = fileProblems(cfg, configFile, user);
  const counts = `${cfg.listeners.length} listener(s), ${cfg.accounts.length} account(s), ${cfg.users.length} user(s)`;
  return report(configFile, problems, [], user ? `${counts}; files readable by ${user.name}` : counts, out, err);
}

/**
 * The deep check as the daemon's user: by default the owner of stateDir (what the unit's
 * User= made it), else the packaged xoauth2-bridge user, else this user.
 */
export async function doctorCommand(
  cfg: Config,
  configFile: string,
  opts: { asUser?: string },
  out: Out,
  err: Out,
): Promise<number> {
  const owner = statOrNull(cfg.stateDir)?.uid;
  const name =
    opts.asUser ?? (owner !== undefined ? lookupUser(owner)?.name : undefined) ?? lookupUser('xoauth2-bridge')?.name;
  const user = name ? resolveUser(name) : null;
  const notes: string[] = [];
  // Run as another user (root, usually), a fix must run as the daemon's user, in the form that
  // works for how it is installed: the root guard refuses the bare command.
  const other = user && user.uid !== process.getuid?.() ? user : null;
  const unit = systemdUnitInstalled();
  const command = (argv: string[]) => {
    const full = [...argv, '-c', configFile];
    return other ? asServiceUser(other.name, full, unit) : ['xoauth2-bridge', ...full.map(shellQuote)].join(' ');
  };
  const problems = fileProblems(cfg, configFile, user);
  const grants = await tokenProblems(cfg, notes, command);
  const upstreams = await probeUpstreams(cfg.accounts);
  for (const u of upstreams) if (u.ok) out.write(`upstream of ${u.account}: ${u.target}: ok (${u.detail})\n`);
  const sections = [
    // Not config errors: the config is fine, the account still needs its OAuth grant.
    { heading: 'grants (accounts that cannot get a token yet)', problems: grants },
    {
      heading: 'upstream (connected from this host, TLS verified, no AUTH)',
      problems: upstreams.filter((u) => !u.ok).map((u) => ({ path: u.key, message: `${u.target}: ${u.detail}` })),
    },
  ];
  const ok = `files readable by ${user?.name ?? 'this user'}, stateDir writable, every account has a grant, every upstream answers`;
  return report(configFile, problems, notes, ok, out, err, sections);
}

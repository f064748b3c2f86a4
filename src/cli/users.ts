// System users for `check-config --as-user`, `doctor` and the root guard: looked up with
// getent (NSS: files, LDAP, sssd, systemd-userdb alike), and a probe that answers "can this
// user read/write these paths" from a process really running as that user.
import { execFileSync, spawnSync } from 'node:child_process';

export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
}

/** The passwd entry for a name or uid, or null when there is none. */
export function lookupUser(who: string | number): SystemUser | null {
  let line: string;
  try {
    line = execFileSync('getent', ['passwd', String(who)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return null;
  }
  const [name, , uid, gid] = line.trim().split('\n')[0].split(':');
  return { name, uid: Number(uid), gid: Number(gid) };
}

/** A group's name, or null. */
export function groupName(gid: number): string | null {
  try {
    return (
      execFileSync('getent', ['group', String(gid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split(
        ':',
      )[0] || null
    );
  } catch {
    return null;
  }
}

export interface Probe {
  path: string;
  need: 'read' | 'write';
}

// test(1) asks access(2), which applies owner, group, supplementary groups and ACLs exactly as
// an open() by that user would. /bin/sh exists on every target; a Node binary under /root may not
// be executable by the service user.
const PROBE =
  'for a; do f=${a#?:}; case $a in r:*) [ -f "$f" ] && [ -r "$f" ];; w:*) [ -d "$f" ] && [ -w "$f" ] && [ -x "$f" ];; esac && echo ok || echo no; done';

/** For each path: whether `user` (default: this process) can read it (files) or write in it (directories). */
export function probeAccess(user: SystemUser | null, probes: Probe[]): boolean[] {
  const args = ['-c', PROBE, 'sh', ...probes.map((p) => `${p.need === 'read' ? 'r' : 'w'}:${p.path}`)];
  // setpriv --init-groups gives the supplementary groups too (ssl-cert for keys in /etc/ssl/private),
  // as systemd's User= does; child_process's uid/gid options would drop them.
  const asOther = user && user.uid !== process.getuid?.();
  const r = asOther
    ? spawnSync('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--', '/bin/sh', ...args], {
        encoding: 'utf8',
      })
    : spawnSync('/bin/sh', args, { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    throw new Error(`cannot check access as ${user?.name ?? 'this user'}: ${r.error?.message ?? r.stderr.trim()}`);
  const lines = r.stdout.trim().split('\n');
  return probes.map((_p, i) => lines[i] === 'ok');
}

/** Shell-quotes an argument for a command line shown to the operator. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

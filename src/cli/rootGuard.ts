// Root on a state directory that belongs to the service user: a CLI acting on the files itself
// would leave root-owned tokens.json / spool files behind, and the daemon would stop on EACCES.
// Refuse (exit 2) and print the command that runs it as the owner instead.
import { stat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { daemonPid } from '../control/client.js';
import { STORE_FILE } from '../oauth/store.js';
import { lookupUser, shellQuote } from './users.js';

export class RootGuardError extends Error {
  readonly exitCode = 2;
}

/** Where the unit's `LoadCredential=token-key:` reads the at-rest key (the .deb's postinst makes it). */
export const UNIT_TOKEN_KEY = '/etc/xoauth2-bridge/token-key';

/** What the guard looks at on the host; tests point it elsewhere. */
export interface GuardHost {
  /** The unit's token-key file. */
  unitKey: string;
  /** Present when systemd is the running init (sd_booted()), so `systemd-run` works. */
  systemdRunDir: string;
}
const HOST: GuardHost = { unitKey: UNIT_TOKEN_KEY, systemdRunDir: '/run/systemd/system' };

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

/**
 * The command line that runs `xoauth2-bridge ARGV...` as the daemon's user: through systemd with
 * the unit's token-key credential (`viaSystemd`, where the unit runs the daemon), else runuser.
 * The root guard and `doctor` both suggest commands with it.
 */
export function asServiceUser(
  owner: string,
  argv: string[],
  viaSystemd: boolean,
  unitKey: string = UNIT_TOKEN_KEY,
): string {
  const args = argv.map(shellQuote).join(' ');
  return viaSystemd
    ? `systemd-run --quiet --pipe --wait -p User=${owner} -p LoadCredential=token-key:${unitKey} xoauth2-bridge ${args}`
    : `runuser -u ${owner} -- xoauth2-bridge ${args}`;
}

/**
 * Throws RootGuardError when this process is root, stateDir is owned by another user, and the
 * command would act on the files: always for `serve` (`always`), else only while no
 * daemon owns the directory (with one, the request goes over its control socket).
 */
export async function refuseRootOnServiceState(
  cfg: Config,
  argv: string[],
  opts: { always?: boolean } = {},
  host: GuardHost = HOST,
): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const st = await stat(cfg.stateDir).catch(() => null);
  if (!st || st.uid === 0) return;
  if (!opts.always && (await daemonPid(cfg.stateDir)) !== null) return;
  const owner = lookupUser(st.uid)?.name ?? String(st.uid);
  // A store sealed with the unit's credential (LoadCredential=token-key, the .deb's setup) opens
  // only with that credential: run the command through systemd the way the unit runs. Where
  // that credential exists and systemd runs (a fresh .deb install), the same form makes the
  // first `authorize` / `token import` write the store sealed rather than in plaintext.
  const sealed =
    !cfg.tokens.encryptionKeyFile &&
    (await readFile(join(cfg.stateDir, STORE_FILE), 'utf8').then(
      (t) => /"encryption"\s*:/.test(t),
      () => false,
    ));
  const withCredential =
    sealed || (!cfg.tokens.encryptionKeyFile && (await exists(host.unitKey)) && (await exists(host.systemdRunDir)));
  const command = asServiceUser(owner, argv, withCredential, host.unitKey);
  const why = sealed
    ? 'the token store is encrypted with it'
    : 'so the token store is written encrypted, as the daemon keeps it';
  throw new RootGuardError(
    `stateDir ${cfg.stateDir} belongs to user ${owner}; run as root, this command would leave root-owned files there that the daemon cannot read. Run it as ${owner}` +
      (withCredential ? ` with the unit's token-key credential (${why}):\n` : ':\n') +
      `  ${command}`,
  );
}

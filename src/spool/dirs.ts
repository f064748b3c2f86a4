// The spool's own directories (spool/, spool/failed, spool/corrupt), checked each time the spool
// opens: each must be a real directory (lstat: a symlink planted in its place would send queue
// files, renames and bounces into whatever it points at), owned by this process's user and not
// writable by group or others (who could plant such a link, or swap files). A bad one stops the
// start with the path and the fix; nothing is written through it.
import { lstat, mkdir } from 'node:fs/promises';
import { userInfo } from 'node:os';

export class SpoolDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpoolDirError';
  }
}

/**
 * Creates `path` (0700) when it is missing and `create` is set, then checks it. Its parent must
 * have been checked first: mkdir would otherwise follow a linked parent.
 */
export async function checkSpoolDir(path: string, opts: { create?: boolean } = {}): Promise<void> {
  let st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  if (!st) {
    if (opts.create === false) return; // made on first use
    await mkdir(path, { recursive: true, mode: 0o700 });
    st = await lstat(path); // judged like any other: something may have taken its place meanwhile
  }
  if (st.isSymbolicLink())
    throw new SpoolDirError(
      `spool directory ${path} is a symbolic link; the spool writes only into its own directories: move what you need out of the link's target, remove the link (rm ${path}) and start again (the directory is recreated)`,
    );
  if (!st.isDirectory())
    throw new SpoolDirError(
      `spool directory ${path} is not a directory: move it away (mv ${path} ${path}.old) and start again (the directory is recreated)`,
    );
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    const me = userInfo().username;
    throw new SpoolDirError(
      `spool directory ${path} belongs to uid ${st.uid}, not to ${me} (uid ${uid}) that runs the spool: chown -R ${me}: ${path}`,
    );
  }
  if (st.mode & 0o022)
    throw new SpoolDirError(
      `spool directory ${path} is writable by ${st.mode & 0o002 ? 'others' : 'its group'} (mode 0${(st.mode & 0o777).toString(8)}): chmod 0700 ${path}`,
    );
}

#!/usr/bin/env node
// Entry point of the `xoauth2-bridge` command. Written in plain, old-syntax-safe JavaScript
// with only dynamic imports and no top-level await, so an old Node reaches the version check below and prints a
// clear message instead of a syntax or module error from deep inside a dependency.
const MIN_MAJOR = 22;
const major = Number(process.versions.node.split('.')[0]);
if (!(major >= MIN_MAJOR)) {
  process.stderr.write(
    `xoauth2-bridge: Node.js ${process.versions.node} is too old; it needs Node.js ${MIN_MAJOR} or newer ` +
      `(the 22, 24 and 26 lines are tested).\n` +
      `Install a current Node.js (https://nodejs.org/en/download), or use the Debian package or the ` +
      `container image, which carry their own runtime.\n`,
  );
  process.exit(2);
}

// `serve` from an npm install, started by hand or by a process manager, has none of the systemd
// unit's Environment= lines; apply its V8 flag here (the unit says why: a 1 MB young generation).
// With it the daemon idles about 5 MB lower (91 instead of 96 MB) and its RSS comes back to within 20-34 MB
// of that after 20 concurrent 20 MB messages instead of 59-71 MB (`npm run bench -- --only 3`).
// V8 reads it only at start, hence execve: the same process (same PID, so signals, systemd's
// MAINPID and the state lock stay right) restarts with it. A semi-space size the operator set
// (NODE_OPTIONS or node's own flags) is kept; XOAUTH2_BRIDGE_NO_TUNE=1 turns this off.
var cliArgs = process.argv.slice(2);
if (cliArgs[0] === 'serve' && process.env.XOAUTH2_BRIDGE_NO_TUNE !== '1' && typeof process.execve === 'function') {
  if (((process.env.NODE_OPTIONS || '') + ' ' + process.execArgv.join(' ')).indexOf('semi-space-size') < 0) {
    try {
      process.execve(
        process.execPath,
        [process.execPath, '--max-semi-space-size=1'].concat(process.execArgv, [process.argv[1]], cliArgs),
        process.env,
      );
    } catch (e) {
      // Not fatal: the daemon runs as it would have without the flag.
    }
  }
}

// Runs the compiled CLI when the package was built (npm pack/prepack, the .deb, the image),
// else the TypeScript sources through tsx (a development checkout).
Promise.all([import('node:fs'), import('node:url'), import('node:path')])
  .then(async ([{ existsSync }, { fileURLToPath, pathToFileURL }, { dirname, join }]) => {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..');
    const compiled = join(root, 'dist', 'main.mjs');
    if (existsSync(compiled)) return import(pathToFileURL(compiled).href);
    const { register } = await import('tsx/esm/api');
    register();
    return import(pathToFileURL(join(root, 'src', 'cli', 'main.ts')).href);
  })
  .catch((e) => {
    process.stderr.write(`xoauth2-bridge: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  });

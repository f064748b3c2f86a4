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

#!/usr/bin/env node
// `npm test`: type-checks (tsc --noEmit) and checks formatting and lint (biome check), both
// alongside the first pass, builds the CLI once (as
// the npm package ships it) for the tests that spawn it and compiles the tests to JavaScript
// (failures then point at the compiled file: its lines are the source's, minus the types),
// then runs the test files in two
// passes of node:test, one process per file: every file not listed below several at a time
// (they share no state: temp dirs, port 0 or freePort()), then the listed ones one at a time.
// Exits non-zero if the typecheck, the format/lint check or either pass failed.
//   node test/run.mjs [--node-test-option ...] [test/unit/foo.test.ts ...]
//     (default: every *.test.ts under test/, e.g. test/unit/ and test/scenarios/)
//   XOAUTH2_BRIDGE_TEST_CONCURRENCY=N          (files at once in the first pass; default 4)
// First: an old Node stops here with the fix, before anything below is loaded or run.
import './require-node.mjs';
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { build } from 'esbuild';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// Files that run alone, after the others, and why: they load both cores themselves or
// measure something that other files' load would disturb. Keyed by file name, whatever folder.
const ALONE = new Map([
  ['t-14-haproxy-proxy-protocol.test.ts', 'two daemons and HAProxy under a 6-client load with a kill -9 in the middle'],
  [
    'listener-kdf.test.ts',
    "keeps the KDF (full-cost scrypt) busy on purpose; under other files' load its floods outlast preAuthTimeout",
  ],
  ['t-33-memory-25mb.test.ts', 'peak RSS of a daemon streaming a 25 MB message'],
  ['t-34-gmail-api-memory-25mb.test.ts', 'peak RSS of a daemon uploading a 25 MB message'],
  ['t-02-systemd-unit.test.ts', 'the demo under strace -f (ptrace slows it several times)'],
  ['t-20-web-console-in-browser.test.ts', 'Chromium'],
]);

const concurrency = Number(process.env.XOAUTH2_BRIDGE_TEST_CONCURRENCY ?? 4);
if (!(concurrency >= 1)) throw new Error('XOAUTH2_BRIDGE_TEST_CONCURRENCY must be a number >= 1');
const options = process.argv.slice(2).filter((a) => a.startsWith('--'));
const named = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const files = named.length
  ? named
  : readdirSync(join(root, 'test'), { recursive: true })
      .filter((f) => f.endsWith('.test.ts'))
      .sort()
      .map((f) => join('test', f));

// Inside the checkout, so bare imports resolve from its node_modules.
mkdirSync(join(root, '.tmp'), { recursive: true });
const work = mkdtempSync(join(root, '.tmp', 'test-run-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const children = new Set();
for (const sig of ['SIGINT', 'SIGTERM'])
  process.on(sig, () => {
    for (const c of children) c.kill(sig);
    process.exit(130);
  });
execFileSync(process.execPath, [join(root, 'packaging', 'build.mjs'), '--outdir', join(work, 'cli')], {
  stdio: ['ignore', 'ignore', 'inherit'],
});
const env = { ...process.env, XOAUTH2_BRIDGE_TEST_CLI: join(work, 'cli', 'main.mjs') };

// The tests and sources compiled to JavaScript once (esbuild, one file each, imports kept), so no
// test process starts tsx: a copy of the checkout with src/ and test/ compiled and everything
// else linked, so paths the tests derive from their own location still lead to the checkout.
const tree = join(work, 'tree');
const sources = ['src', 'test'].flatMap((d) =>
  readdirSync(join(root, d), { recursive: true })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(root, d, f)),
);
await build({
  entryPoints: sources,
  outdir: tree,
  outbase: root,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  logLevel: 'warning',
});
for (const entry of readdirSync(root)) {
  if (!['src', 'test', '.tmp', '.git'].includes(entry)) symlinkSync(join(root, entry), join(tree, entry));
}
mkdirSync(join(tree, '.tmp')); // e.g. the unpacked Exim, but not the runs' own trees
for (const entry of readdirSync(join(root, '.tmp'))) {
  if (!entry.startsWith('test-run-')) symlinkSync(join(root, '.tmp', entry), join(tree, '.tmp', entry));
}
// Same place in the compiled tree as in the checkout (test/unit/x.test.ts -> tree/test/unit/x.test.js).
const compiled = (f) => join(tree, relative(root, resolve(f))).replace(/\.ts$/, '.js');

function exitOf(child) {
  children.add(child);
  return new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? (signal ? 1 : 0));
    }),
  );
}

function pass(list, n) {
  if (list.length === 0) return Promise.resolve(0);
  return exitOf(
    spawn(process.execPath, ['--test', `--test-concurrency=${n}`, ...options, ...list.map(compiled)], {
      cwd: root,
      env,
      stdio: 'inherit',
    }),
  );
}

// Its output is printed at the end, not in the middle of the tests'.
const tsc = spawn(
  process.execPath,
  [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json', '--noEmit'],
  { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
);
let tscOut = '';
tsc.stdout.on('data', (d) => (tscOut += d));
tsc.stderr.on('data', (d) => (tscOut += d));
const typecheck = exitOf(tsc);
// Formatting and lint (Biome, biome.json): like the typecheck, reported at the end.
const biome = spawn(
  join(root, 'node_modules', '.bin', 'biome'),
  ['check', '--diagnostic-level=error', '--colors=off'],
  { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
);
let biomeOut = '';
biome.stdout.on('data', (d) => (biomeOut += d));
biome.stderr.on('data', (d) => (biomeOut += d));
const lint = exitOf(biome);

const alone = files.filter((f) => ALONE.has(basename(f)));
const together = files.filter((f) => !ALONE.has(basename(f)));
const t0 = Date.now();
console.log(`# ${together.length} files, ${concurrency} at a time`);
const a = await pass(together, concurrency);
const t1 = Date.now();
if (alone.length) console.log(`# ${alone.length} files one at a time: ${alone.map((f) => basename(f)).join(', ')}`);
const b = await pass(alone, 1);
console.log(
  `# test files took ${((t1 - t0) / 1000).toFixed(0)} s together + ${((Date.now() - t1) / 1000).toFixed(0)} s alone`,
);
const c = await typecheck;
console.log(c ? `# typecheck (tsc --noEmit) failed:\n${tscOut}` : '# typecheck (tsc --noEmit) passed');
const l = await lint;
console.log(
  l
    ? `# format and lint (biome check) failed; \`npx biome check --write\` fixes the formatting:\n${biomeOut}`
    : '# format and lint (biome check) passed',
);
process.exitCode = a || b || c || l;

#!/usr/bin/env node
// Compiles the CLI to plain JavaScript with esbuild, so no installed form needs tsx:
//   node packaging/build.mjs                  -> dist/ (npm tarball; dependencies stay in node_modules)
//   node packaging/build.mjs --standalone DIR -> DIR/ with every dependency bundled in (.deb, image)
//   node packaging/build.mjs --outdir DIR     -> DIR/ like dist/ (the test runner's CLI; DIR inside
//                                                 the checkout so node_modules resolves)
// Code splitting keeps the CLI's lazy loading: `--version` loads only the entry chunk.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const at = args.indexOf('--standalone');
const standalone = at >= 0;
const out = args.indexOf('--outdir');
const outdir = standalone ? resolve(args[at + 1] ?? '') : out >= 0 ? resolve(args[out + 1] ?? '') : join(root, 'dist');
if ((standalone && !args[at + 1]) || (out >= 0 && !args[out + 1]))
  throw new Error('usage: build.mjs [--standalone DIR | --outdir DIR]');

rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { main: join(root, 'src', 'cli', 'main.ts') },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  chunkNames: 'chunks/[name]-[hash]',
  // .mjs: ES modules wherever the files end up, with or without a package.json beside them.
  outExtension: { '.js': '.mjs' },
  // Bundled CommonJS dependencies call require(); give every ES chunk a real one.
  banner: standalone
    ? {
        js: "import { createRequire as __xbCreateRequire } from 'node:module'; const require = __xbCreateRequire(import.meta.url);",
      }
    : {},
  packages: standalone ? 'bundle' : 'external',
  legalComments: standalone ? 'linked' : 'none',
  logLevel: 'warning',
});
// stderr: as the prepack script, stdout belongs to `npm pack --json`.
console.error(`built ${outdir}${standalone ? ' (standalone)' : ''}`);

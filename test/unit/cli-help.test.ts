// Every command's --help as an operator reads it: a description and examples. The list of
// commands comes from the program itself, so a new command without help text fails here.
// All of them are rendered by commander in this process (a Node start each would take ~1 s);
// a few are run as real `--help` processes to show the output is the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { CLI } from '../helpers/bridge.js';
import { buildProgram } from '../../src/cli/program.js';

const run = promisify(execFile);

function walk(cmd: Command, path: string[] = []): [string[], Command][] {
  return [[path, cmd], ...cmd.commands.flatMap((c) => walk(c, [...path, c.name()]))];
}

function helpOf(cmd: Command): string {
  let out = '';
  cmd.configureOutput({ writeOut: (s) => (out += s), getOutHelpWidth: () => 80 });
  cmd.outputHelp();
  return out;
}

test('every command (and the program) has a description and examples in --help; the real processes print the same', async () => {
  const all = walk(buildProgram());
  assert.ok(all.length > 15, `found only ${all.length} commands`);
  const helps = new Map(all.map(([p, c]) => [p.join(' '), helpOf(c)]));
  for (const [name, out] of helps) {
    const label = name || '(program)';
    const [usage, , description] = out.split('\n');
    assert.match(usage, new RegExp(`^Usage: xoauth2-bridge ${name}`), label);
    assert.ok(description && description.trim().length > 10, `${label}: no description:\n${out}`);
    const examples = out.split('\nExamples:\n')[1];
    assert.ok(examples, `${label}: no Examples section:\n${out}`);
    assert.match(examples, /^ {2}\$ .*\b(xoauth2-bridge|systemctl) /m, `${label}: no example command line`);
  }
  assert.match(helps.get('')!, /XOAUTH2_BRIDGE_CONFIG +config file used when -c is not given/);
  assert.match(
    helps.get('check-config')!,
    /default: \$XOAUTH2_BRIDGE_CONFIG, else\s+\/etc\/xoauth2-bridge\/config\.yaml/,
  );

  for (const p of [[], ['queue'], ['token', 'import'], ['doctor']]) {
    const { stdout } = await run(process.execPath, [...CLI, ...p, '--help'], {
      timeout: 60_000,
      env: { ...process.env, COLUMNS: '80' },
    });
    assert.equal(stdout, helps.get(p.join(' ')), `xoauth2-bridge ${p.join(' ')} --help`);
  }
});

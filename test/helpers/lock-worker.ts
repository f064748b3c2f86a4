// A state-lock contender in a process of its own (test/unit/state-lock.test.ts). Commands on stdin,
// one a line, each answered with one line on stdout:
//   take DIR ROLE   -> acquireStateLock(DIR, ROLE, { waitMs: 0 }): "owner" or "refused <message>"
//   release         -> releases a lock it holds: "released"
import { createInterface } from 'node:readline';
import { acquireStateLock, type LockRole, type StateLock } from '../../src/control/stateLock.js';

let lock: StateLock | undefined;
const say = (line: string) => process.stdout.write(line.replace(/\n/g, ' ') + '\n');

for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, dir, role] = line.split(' ');
  if (cmd === 'take') {
    try {
      lock = await acquireStateLock(dir, role as LockRole, { waitMs: 0 });
      say('owner');
    } catch (e) {
      say(`refused ${(e as Error).message}`);
    }
  } else if (cmd === 'release') {
    await lock?.release();
    lock = undefined;
    say('released');
  }
}

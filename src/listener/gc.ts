// An on-demand young-generation GC, for the places where the listener churns through
// buffers while allocating next to nothing on the JS heap: V8 then frees them only when
// their external memory reaches its 64 MB soft limit (or, with a large young generation,
// after many megabytes of them), and glibc keeps the memory they took.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let minorGc: ((opts: { type: 'minor' }) => void) | null | undefined;

/** Runs a minor GC (well under a millisecond with the unit's 1 MB young generation). */
export function collectYoung(): void {
  if (minorGc === undefined) {
    try {
      // The one way to reach V8's gc() without starting node with --expose-gc; the flag is
      // switched off again at once, so no other context gets a global gc.
      setFlagsFromString('--expose-gc');
      minorGc = runInNewContext('gc') as typeof minorGc;
      setFlagsFromString('--no-expose-gc');
    } catch {
      minorGc = null;
    }
  }
  minorGc?.({ type: 'minor' });
}

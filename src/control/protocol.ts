// The control protocol: one JSON line request, one JSON line answer, per connection on
// stateDir/control.sock. `dispatch` maps a request onto the operations; the socket server
// and the CLI acting without a daemon both use it, so both give the same answers.
import { join } from 'node:path';
import type { Operations } from './ops.js';

export const SOCKET_NAME = 'control.sock';

export function socketPath(stateDir: string): string {
  return join(stateDir, SOCKET_NAME);
}

export type OpName =
  | 'queue.list'
  | 'queue.show'
  | 'queue.retry'
  | 'queue.retryAll'
  | 'queue.hold'
  | 'queue.release'
  | 'queue.delete'
  | 'token.status'
  | 'token.import'
  | 'token.refresh'
  | 'reload'
  | 'console.link'
  | 'send-test';

export interface Request {
  op: OpName;
  args?: Record<string, unknown>;
}

export type Response = { ok: true; result: unknown } | { ok: false; error: string };

function str(args: Record<string, unknown> | undefined, key: string): string {
  const v = args?.[key];
  if (typeof v !== 'string' || !v) throw new RequestError(`missing argument "${key}"`);
  return v;
}

/** A malformed request (not a refusal of a valid one). */
export class RequestError extends Error {}

/** Runs one request. Refusals are results with ok: false; only malformed requests throw. */
export async function dispatch(ops: Operations, req: Request): Promise<unknown> {
  const a = req.args;
  switch (req.op) {
    case 'queue.list':
      return ops.listQueue();
    case 'queue.show':
      return ops.show(str(a, 'id'));
    case 'queue.retry':
      return ops.retry(str(a, 'id'));
    case 'queue.retryAll':
      return ops.retryAll({ force: a?.force === true });
    case 'queue.hold':
      return ops.hold(str(a, 'id'));
    case 'queue.release':
      return ops.release(str(a, 'id'));
    case 'queue.delete':
      return ops.delete(str(a, 'id'));
    case 'token.status':
      return ops.tokenStatus();
    case 'token.import':
      return ops.importToken(
        str(a, 'account'),
        str(a, 'refreshToken'),
        typeof a?.authorizedEmail === 'string' ? { authorizedEmail: a.authorizedEmail } : {},
      );
    case 'token.refresh':
      return ops.refresh(str(a, 'account'));
    case 'reload':
      return ops.reload();
    case 'console.link':
      return ops.consoleLink();
    case 'send-test':
      return ops.sendTest(str(a, 'to'), typeof a?.account === 'string' ? a.account : undefined);
    default:
      throw new RequestError(`unknown operation ${JSON.stringify((req as { op?: unknown }).op)}`);
  }
}

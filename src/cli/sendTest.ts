// `send-test`: one message straight through an account's token and upstream, bypassing the
// spool. The owner of the state directory sends it (src/upstream/testMessage.ts): the running
// daemon over its control socket, or, with none, this process holding the state lock, since
// getting a token may refresh it and write the token store (and a Microsoft refresh rotates
// the refresh token a daemon would still hold).
import type { Config } from '../config/schema.js';
import { callOwner } from '../control/client.js';
import type { OpResult } from '../control/ops.js';

export async function sendTestCommand(
  config: Config,
  opts: { to: string; account?: string },
  out: NodeJS.WritableStream,
): Promise<number> {
  if (opts.account && !config.accounts.some((a) => a.name === opts.account)) {
    out.write(`send-test: no account named "${opts.account}"\n`);
    return 2;
  }
  const r = (await callOwner(config, 'send-test', { to: opts.to, ...(opts.account ? { account: opts.account } : {}) }))
    .result as OpResult;
  out.write(`${r.message}\n`);
  return r.ok ? 0 : 1;
}

// The operations as the CLI runs them when no daemon is running (the caller holds the state
// lock): the same Spool, DeliveryWorker (loaded, never sending) and TokenService the daemon
// would use, on the files directly.
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { Spool } from '../spool/spool.js';
import { DeliveryWorker } from '../delivery/worker.js';
import { TokenService } from '../oauth/service.js';
import { TransportRouter } from '../upstream/router.js';
import { Operations } from './ops.js';
import type { OpName } from './protocol.js';

export async function localOperations(
  config: Config,
  log: Logger,
  op: OpName,
): Promise<{ ops: Operations; close: () => Promise<void> }> {
  const tokens = new TokenService({ config, log });
  // init() never throws: an unreadable token store holds every account with the store's
  // message (token commands report it) while queue commands still work on the files.
  await tokens.init();
  const spool = new Spool(config.stateDir, log);
  if (op.startsWith('queue.')) await spool.init();
  const worker = new DeliveryWorker({ config, log, spool, upstream: null, health: tokens });
  if (op.startsWith('queue.')) await worker.load();
  // send-test sends from here, under the lock the caller holds (a refresh may write the store).
  const upstream = op === 'send-test' ? new TransportRouter({ config, log, tokens }) : undefined;
  const ops = new Operations({ config: () => config, spool, worker, tokens, live: false, upstream, log });
  return {
    ops,
    close: async () => {
      await upstream?.close();
      await worker.flush();
      await spool.close();
      tokens.stop();
    },
  };
}

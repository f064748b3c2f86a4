// What a transport in its own folder (smtp/, gmail-api/, graph/) gives the router: the
// delivery worker's `Upstream`, plus reloads, a description for `send-test`, and its size limit.
import type { AccountConfig, Config } from '../config/schema.js';
import type { Upstream } from '../types.js';

export interface Transport extends Upstream {
  reload(config: Config): void;
  /** Where this account's mail goes, for `send-test` output. */
  describe(account: AccountConfig): string;
}

// Bench-only daemon entry: runs a Bridge like `serve` does, in its own process so its RSS
// can be read from /proc, and prints the bound ports on stdout (the bench sets the log
// level to warn, so the "started" log line that test/helpers/bridge.ts waits for is not
// written). `--unsafe-no-fsync` exists only here, for the durability-cost scenario: it is
// never a config key or a CLI option of the product.
import { loadConfig } from '../src/config/load.js';
import { createLogger } from '../src/log/logger.js';
import { Bridge } from '../src/daemon/bridge.js';
import { kdfGate } from '../src/listener/passwords.js';

const [configFile, ...flags] = process.argv.slice(2);
if (!configFile) {
  process.stderr.write('usage: bench/serve.ts <config> [--unsafe-no-fsync] [--unsafe-no-kdf-gate]\n');
  process.exit(2);
}
// `--unsafe-no-kdf-gate`: the "before" of the KDF-flood scenario (every password check runs at once).
if (flags.includes('--unsafe-no-kdf-gate')) kdfGate.bypass = true;
const config = loadConfig(configFile);
const log = createLogger({ level: config.log.level, format: config.log.format });
const bridge = new Bridge({ config, configFile, log, unsafeNoFsync: flags.includes('--unsafe-no-fsync') });
await bridge.start();
process.stdout.write(
  JSON.stringify({ ready: true, ports: Object.fromEntries(bridge.bound.map((b) => [b.name, b.port])) }) + '\n',
);

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  bridge.stop(5000).then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The harness holds our stdin open; if it dies, do not linger as an orphan.
process.stdin.on('end', stop);
process.stdin.resume();
// SIGUSR2: print this process's memory as the heap sees it (the bench reads RSS from /proc).
process.on('SIGUSR2', () => {
  const m = process.memoryUsage();
  process.stdout.write(
    JSON.stringify({
      memory: {
        rss: m.rss,
        heapTotal: m.heapTotal,
        heapUsed: m.heapUsed,
        external: m.external,
        arrayBuffers: m.arrayBuffers,
      },
    }) + '\n',
  );
});

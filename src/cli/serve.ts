// `serve`: run the daemon in the foreground under systemd (or a terminal).
import type { Config } from '../config/schema.js';
import { createLogger } from '../log/logger.js';
import { Bridge } from '../daemon/bridge.js';
import { SystemdNotifier } from '../daemon/notify.js';

/** `configFile` is kept for SIGHUP, which re-reads it. */
export async function serveCommand(config: Config, configFile: string): Promise<number> {
  const log = createLogger({ level: config.log.level, format: config.log.format });
  const bridge = new Bridge({ config, configFile, log });
  const systemd = new SystemdNotifier(log);
  try {
    await bridge.start();
    // Listeners bound, spool recovered: systemd (Type=notify) starts dependent units now.
    await systemd.ready(`relaying; listening on ${bridge.bound.map((b) => `${b.host}:${b.port}`).join(', ')}`);
  } catch (err) {
    log.error('start failed', { err });
    await bridge.stop(1000).catch(() => {});
    return 1;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal });
      const done = (code: number) => {
        systemd.stop();
        resolve(code);
      };
      void systemd.stopping();
      bridge.stop().then(
        () => done(0),
        (err) => {
          log.error('stop failed', { err });
          done(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => void bridge.reload());
  });
}

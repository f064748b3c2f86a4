// `serve`: run the daemon in the foreground under systemd (or a terminal).
import { loadConfig, ConfigError } from '../config/load.js';
import { createLogger } from '../log/logger.js';
import { Bridge } from '../daemon/bridge.js';

export async function serveCommand(configFile: string): Promise<number> {
  let config;
  try {
    config = loadConfig(configFile);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + '\n');
      return 2;
    }
    throw e;
  }
  const log = createLogger({ level: config.log.level, format: config.log.format });
  const bridge = new Bridge({ config, configFile, log });
  try {
    await bridge.start();
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
      bridge.stop().then(
        () => resolve(0),
        (err) => {
          log.error('stop failed', { err });
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => void bridge.reload());
  });
}

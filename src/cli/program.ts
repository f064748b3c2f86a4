// The `xoauth2-bridge` command line. Each subcommand is a thin shell over a module; exit
// codes: 0 ok, 1 operation failed, 2 invalid config or usage.
import { Command, Option } from 'commander';
import { loadConfig, ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { VERSION } from '../version.js';

// Each command loads only its own modules: the daemon never loads the demo's fakes, and a
// CLI call never loads the daemon.
const queueCli = () => import('./queue.js');
const tokenCli = () => import('./token.js');

const DEFAULT_CONFIG = process.env.XOAUTH2_BRIDGE_CONFIG ?? '/etc/xoauth2-bridge/config.yaml';

function withConfig(file: string): Config {
  try {
    return loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + '\n');
      process.exit(2);
    }
    throw e;
  }
}

async function run(fn: () => Promise<number>): Promise<void> {
  try {
    process.exitCode = await fn();
  } catch (e) {
    const err = e as Error;
    process.stderr.write(`xoauth2-bridge: ${err.message}\n`);
    process.exitCode = err instanceof ConfigError ? 2 : 1;
  }
}

export function buildProgram(): Command {
  const program = new Command('xoauth2-bridge')
    .description('Local SMTP to Gmail XOAUTH2 bridge: plain SMTP in, durable spool, XOAUTH2 relay out')
    .version(VERSION, '-V, --version', 'print the version')
    .showHelpAfterError();
  const configOpt = () => new Option('-c, --config <file>', 'config file').default(DEFAULT_CONFIG);

  program
    .command('serve')
    .description('run the daemon in the foreground (SIGTERM: graceful stop, SIGHUP: reload)')
    .addOption(configOpt())
    .action((o: { config: string }) => run(async () => (await import('./serve.js')).serveCommand(withConfig(o.config), o.config)));

  program
    .command('check-config')
    .description('validate the config; every problem is printed with its key path; exit 2 if invalid')
    .addOption(configOpt())
    .action((o: { config: string }) =>
      run(async () => {
        const cfg = withConfig(o.config);
        process.stdout.write(
          `${o.config}: ok (${cfg.listeners.length} listener(s), ${cfg.accounts.length} account(s), ${cfg.users.length} user(s))\n`,
        );
        return 0;
      }),
    );

  program
    .command('hash-password')
    .description('read a password from stdin (or prompt without echo) and print its scrypt hash')
    .addOption(configOpt().hideHelp())
    .action(() => run(async () => (await import('../listener/passwords.js')).hashPasswordCommand(process.stdin, process.stdout, Boolean(process.stdin.isTTY))));

  program
    .command('authorize')
    .description('OAuth consent for ACCOUNT (PKCE, loopback redirect on 127.0.0.1)')
    .argument('<account>')
    .option('--manual', 'print the URL and read the pasted redirect URL (works over SSH)', false)
    .option('--device', 'Microsoft accounts: sign in with a device code on any other device', false)
    .addOption(configOpt())
    .action((account: string, o: { config: string; manual: boolean; device: boolean }) =>
      run(async () => (await tokenCli()).authorizeCommand(withConfig(o.config), account, { manual: o.manual, device: o.device }, process.stdin, process.stdout)),
    );

  const token = program.command('token').description('inspect and manage OAuth tokens');
  token
    .command('import')
    .description('read a refresh token from stdin and store it for ACCOUNT')
    .argument('<account>')
    .addOption(configOpt())
    .action((account: string, o: { config: string }) => run(async () => (await tokenCli()).tokenImport(withConfig(o.config), account, process.stdin, process.stdout)));
  token
    .command('status')
    .description('per account: state, access-token expiry, last refresh, last error')
    .option('--json', 'machine-readable output', false)
    .addOption(configOpt())
    .action((o: { config: string; json: boolean }) => run(async () => (await tokenCli()).tokenStatus(withConfig(o.config), { json: o.json }, process.stdout)));
  token
    .command('refresh')
    .description('force a token refresh for ACCOUNT now')
    .argument('<account>')
    .addOption(configOpt())
    .action((account: string, o: { config: string }) => run(async () => (await tokenCli()).tokenRefresh(withConfig(o.config), account, process.stdout)));

  const queue = program.command('queue').description('inspect and steer the spool');
  queue
    .command('list')
    .option('--json', 'machine-readable output', false)
    .addOption(configOpt())
    .action((o: { config: string; json: boolean }) => run(async () => (await queueCli()).queueList(withConfig(o.config), { json: o.json }, process.stdout)));
  queue
    .command('show')
    .argument('<id>')
    .addOption(configOpt())
    .action((id: string, o: { config: string }) => run(async () => (await queueCli()).queueShow(withConfig(o.config), id, process.stdout)));
  queue
    .command('retry')
    .description('try a message now (a failed one: its failed recipients again); --all: every queued message')
    .argument('[id]')
    .option('--all', 'retry every queued message now', false)
    .option('--force', "with --all: also messages under their account's quota hold", false)
    .addOption(configOpt())
    .action((id: string | undefined, o: { config: string; all: boolean; force: boolean }) =>
      run(async () => {
        if (!id && !o.all) {
          process.stderr.write('queue retry: give a queue ID or --all\n');
          return 2;
        }
        return (await queueCli()).queueRetry(withConfig(o.config), { id, all: o.all, force: o.force }, process.stdout);
      }),
    );
  queue
    .command('hold')
    .description('hold a message (state held, reason operator) until `queue release`')
    .argument('<id>')
    .addOption(configOpt())
    .action((id: string, o: { config: string }) => run(async () => (await queueCli()).queueHold(withConfig(o.config), id, process.stdout)));
  queue
    .command('release')
    .description('let an operator-held message go (due now)')
    .argument('<id>')
    .addOption(configOpt())
    .action((id: string, o: { config: string }) => run(async () => (await queueCli()).queueRelease(withConfig(o.config), id, process.stdout)));
  queue
    .command('delete')
    .argument('<id>')
    .addOption(configOpt())
    .action((id: string, o: { config: string }) => run(async () => (await queueCli()).queueDelete(withConfig(o.config), id, process.stdout)));

  program
    .command('reload')
    .description('ask the running daemon to re-read its config (like SIGHUP) and say whether it took it')
    .addOption(configOpt())
    .action((o: { config: string }) => run(async () => (await tokenCli()).reloadCommand(withConfig(o.config), process.stdout)));

  program
    .command('send-test')
    .description('send one test message straight through an account (checks token and Gmail)')
    .requiredOption('--to <addr>', 'recipient')
    .option('--account <name>', 'account (default: the first)')
    .addOption(configOpt())
    .action((o: { config: string; to: string; account?: string }) =>
      run(async () => (await import('./sendTest.js')).sendTestCommand(withConfig(o.config), { to: o.to, account: o.account }, process.stdout)),
    );

  program
    .command('demo')
    .description('run the bridge against built-in fakes (token endpoint + Gmail, or Microsoft identity + Exchange Online) and relay one message')
    .addOption(new Option('--provider <provider>', 'which provider to fake').choices(['google', 'microsoft']).default('google'))
    .action((o: { provider: 'google' | 'microsoft' }) => run(async () => (await import('./demo.js')).demoCommand(process.stdout, { provider: o.provider })));

  return program;
}


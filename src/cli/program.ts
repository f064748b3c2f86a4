// The `xoauth2-bridge` command line. Each subcommand is a thin shell over a module; exit
// codes: 0 ok, 1 operation failed, 2 invalid config or usage. Over 400 lines on purpose: it is
// one table (every command, option and help example), read top to bottom like `--help`.
import { Command, Option } from 'commander';
import { loadConfig, ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { VERSION } from '../version.js';

// Each command loads only its own modules: the daemon never loads the demo's fakes, and a
// CLI call never loads the daemon.
const queueCli = () => import('./queue.js');
const tokenCli = () => import('./token.js');

const DEFAULT_CONFIG = process.env.XOAUTH2_BRIDGE_CONFIG ?? '/etc/xoauth2-bridge/config.yaml';
const CONFIG_DEFAULT_HELP = '$XOAUTH2_BRIDGE_CONFIG, else /etc/xoauth2-bridge/config.yaml';

/** "Examples:" under a command's --help. */
const examples = (...lines: string[]) => '\nExamples:\n' + lines.map((l) => `  $ ${l}`).join('\n') + '\n';

function withConfig(file: string, load: (file: string) => Config = loadConfig): Config {
  try {
    return load(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + '\n');
      process.exit(2);
    }
    throw e;
  }
}

/**
 * The config for a command that reads or changes the state directory, after the root guard
 * (src/cli/rootGuard.ts): `always` for commands that act on the files even beside a daemon.
 */
async function withState(file: string, opts: { always?: boolean } = {}): Promise<Config> {
  const cfg = withConfig(file);
  const { refuseRootOnServiceState } = await import('./rootGuard.js');
  await refuseRootOnServiceState(cfg, process.argv.slice(2), opts);
  return cfg;
}

async function run(fn: () => Promise<number>): Promise<void> {
  try {
    process.exitCode = await fn();
  } catch (e) {
    const err = e as Error & { exitCode?: number };
    process.stderr.write(`xoauth2-bridge: ${err.message}\n`);
    process.exitCode = err.exitCode ?? (err instanceof ConfigError ? 2 : 1);
  }
}

export function buildProgram(): Command {
  const program = new Command('xoauth2-bridge')
    .description('Local SMTP to Gmail XOAUTH2 bridge: plain SMTP in, durable spool, XOAUTH2 relay out')
    .version(VERSION, '-V, --version', 'print the version')
    .showHelpAfterError()
    .addHelpText(
      'after',
      examples(
        'xoauth2-bridge demo',
        'xoauth2-bridge check-config',
        'xoauth2-bridge doctor',
        'xoauth2-bridge COMMAND --help',
      ) +
        '\nEnvironment:\n  XOAUTH2_BRIDGE_CONFIG  config file used when -c is not given (default /etc/xoauth2-bridge/config.yaml)\n',
    );
  const configOpt = () => new Option('-c, --config <file>', 'config file').default(DEFAULT_CONFIG, CONFIG_DEFAULT_HELP);
  const asUserOpt = () =>
    new Option(
      '--as-user <name>',
      'check that this user (the one the daemon runs as) can read every named file; needs root',
    );

  program
    .command('serve')
    .description('run the daemon in the foreground (SIGTERM: graceful stop, SIGHUP: reload)')
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples(
        'xoauth2-bridge serve -c /etc/xoauth2-bridge/config.yaml',
        'systemctl start xoauth2-bridge   # the packaged unit runs this as user xoauth2-bridge',
      ),
    )
    .action((o: { config: string }) =>
      run(async () => (await import('./serve.js')).serveCommand(await withState(o.config, { always: true }), o.config)),
    );

  program
    .command('check-config')
    .description(
      'validate the config and the files it names (exist, readable; --as-user: by that user); every problem with its key path; exit 2 if any',
    )
    .addOption(configOpt())
    .addOption(asUserOpt())
    .addHelpText(
      'after',
      examples(
        'xoauth2-bridge check-config -c ./config.yaml',
        'sudo xoauth2-bridge check-config --as-user xoauth2-bridge',
      ),
    )
    .action((o: { config: string; asUser?: string }) =>
      run(async () => {
        const c = await import('./checkConfig.js');
        return c.checkConfigCommand(
          withConfig(o.config, (f) => c.loadForCheck(f, o.asUser)),
          o.config,
          o,
          process.stdout,
          process.stderr,
        );
      }),
    );

  program
    .command('doctor')
    .description(
      "deep checks as the daemon's user (default: the owner of stateDir): config, named files readable, stateDir writable, a grant for every account; exit 2 if any problem",
    )
    .addOption(configOpt())
    .addOption(asUserOpt())
    .addHelpText(
      'after',
      examples(
        'sudo xoauth2-bridge doctor',
        'sudo xoauth2-bridge doctor --as-user xoauth2-bridge -c /etc/xoauth2-bridge/config.yaml',
      ),
    )
    .action((o: { config: string; asUser?: string }) =>
      run(async () => {
        const c = await import('./checkConfig.js');
        return c.doctorCommand(
          withConfig(o.config, (f) => c.loadForCheck(f, o.asUser)),
          o.config,
          o,
          process.stdout,
          process.stderr,
        );
      }),
    );

  program
    .command('hash-password')
    .description('read a password from stdin (or prompt without echo) and print its scrypt hash')
    .addOption(configOpt().hideHelp())
    .addHelpText(
      'after',
      examples(
        'xoauth2-bridge hash-password            # prompts without echo',
        'printf \'%s\' "$PASSWORD" | xoauth2-bridge hash-password',
      ),
    )
    .action(() =>
      run(async () =>
        (await import('../listener/passwords.js')).hashPasswordCommand(
          process.stdin,
          process.stdout,
          Boolean(process.stdin.isTTY),
        ),
      ),
    );

  program
    .command('authorize')
    .description('OAuth consent for ACCOUNT (PKCE, loopback redirect on 127.0.0.1)')
    .argument('<account>')
    .option('--manual', 'print the URL and read the pasted redirect URL (works over SSH)', false)
    .option('--device', 'Microsoft accounts: sign in with a device code on any other device', false)
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples(
        'runuser -u xoauth2-bridge -- xoauth2-bridge authorize office',
        'xoauth2-bridge authorize office --manual   # over SSH: open the URL elsewhere, paste the redirect URL back',
        'xoauth2-bridge authorize m365 --device     # Microsoft: enter the code shown at microsoft.com/devicelogin',
      ),
    )
    .action((account: string, o: { config: string; manual: boolean; device: boolean }) =>
      run(async () =>
        (await tokenCli()).authorizeCommand(
          await withState(o.config),
          account,
          { manual: o.manual, device: o.device },
          process.stdin,
          process.stdout,
        ),
      ),
    );

  const token = program
    .command('token')
    .description('inspect and manage OAuth tokens (asks the running daemon, or acts on the token store with none)')
    .addHelpText(
      'after',
      examples(
        'xoauth2-bridge token status',
        'xoauth2-bridge token import office < refresh-token.txt',
        'xoauth2-bridge token refresh office',
      ),
    );
  token
    .command('import')
    .description('read a refresh token from stdin and store it for ACCOUNT')
    .argument('<account>')
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples('printf \'%s\' "$REFRESH_TOKEN" | runuser -u xoauth2-bridge -- xoauth2-bridge token import office'),
    )
    .action((account: string, o: { config: string }) =>
      run(async () =>
        (await tokenCli()).tokenImport(await withState(o.config), account, process.stdin, process.stdout),
      ),
    );
  token
    .command('status')
    .description('per account: state, access-token expiry, last refresh, last error')
    .option('--json', 'machine-readable output', false)
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples(
        'xoauth2-bridge token status',
        'xoauth2-bridge token status --json   # exit 0 when every account is ok, 1 otherwise',
      ),
    )
    .action((o: { config: string; json: boolean }) =>
      run(async () => (await tokenCli()).tokenStatus(await withState(o.config), { json: o.json }, process.stdout)),
    );
  token
    .command('refresh')
    .description('force a token refresh for ACCOUNT now')
    .argument('<account>')
    .addOption(configOpt())
    .addHelpText('after', examples('xoauth2-bridge token refresh office'))
    .action((account: string, o: { config: string }) =>
      run(async () => (await tokenCli()).tokenRefresh(await withState(o.config), account, process.stdout)),
    );

  const queue = program
    .command('queue')
    .description('inspect and steer the spool (asks the running daemon, or acts on the spool with none)')
    .addHelpText(
      'after',
      examples('xoauth2-bridge queue list', 'xoauth2-bridge queue show ID', 'xoauth2-bridge queue retry --all'),
    );
  queue
    .command('list')
    .description(
      'every message in the spool: id, account, from, state (reason), recipients, attempts, next attempt, last reply',
    )
    .option('--json', 'machine-readable output', false)
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples('xoauth2-bridge queue list', 'xoauth2-bridge queue list --json | jq \'.[] | select(.state == "held")\''),
    )
    .action((o: { config: string; json: boolean }) =>
      run(async () => (await queueCli()).queueList(await withState(o.config), { json: o.json }, process.stdout)),
    );
  queue
    .command('show')
    .description("one message: envelope, each recipient's status, attempts and the last upstream reply")
    .argument('<id>')
    .addOption(configOpt())
    .addHelpText('after', examples('xoauth2-bridge queue show 3f2a9c1e   # the ID from `queue list` or the 250 reply'))
    .action((id: string, o: { config: string }) =>
      run(async () => (await queueCli()).queueShow(await withState(o.config), id, process.stdout)),
    );
  queue
    .command('retry')
    .description('try a message now (a failed one: its failed recipients again); --all: every queued message')
    .argument('[id]')
    .option('--all', 'retry every queued message now', false)
    .option('--force', "with --all: also messages under their account's quota hold", false)
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples(
        'xoauth2-bridge queue retry 3f2a9c1e',
        'xoauth2-bridge queue retry --all',
        'xoauth2-bridge queue retry --all --force   # also past a quota hold',
      ),
    )
    .action((id: string | undefined, o: { config: string; all: boolean; force: boolean }) =>
      run(async () => {
        if (!id && !o.all) {
          process.stderr.write('queue retry: give a queue ID or --all\n');
          return 2;
        }
        return (await queueCli()).queueRetry(
          await withState(o.config),
          { id, all: o.all, force: o.force },
          process.stdout,
        );
      }),
    );
  queue
    .command('hold')
    .description('hold a message (state held, reason operator) until `queue release`')
    .argument('<id>')
    .addOption(configOpt())
    .addHelpText('after', examples('xoauth2-bridge queue hold 3f2a9c1e'))
    .action((id: string, o: { config: string }) =>
      run(async () => (await queueCli()).queueHold(await withState(o.config), id, process.stdout)),
    );
  queue
    .command('release')
    .description('let an operator-held message go (due now)')
    .argument('<id>')
    .addOption(configOpt())
    .addHelpText('after', examples('xoauth2-bridge queue release 3f2a9c1e'))
    .action((id: string, o: { config: string }) =>
      run(async () => (await queueCli()).queueRelease(await withState(o.config), id, process.stdout)),
    );
  queue
    .command('delete')
    .description('remove a message from the spool without sending it (recipients not yet accepted never get it)')
    .argument('<id>')
    .addOption(configOpt())
    .addHelpText('after', examples('xoauth2-bridge queue delete 3f2a9c1e'))
    .action((id: string, o: { config: string }) =>
      run(async () => (await queueCli()).queueDelete(await withState(o.config), id, process.stdout)),
    );

  program
    .command('reload')
    .description('ask the running daemon to re-read its config (like SIGHUP) and say whether it took it')
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples('xoauth2-bridge reload', 'systemctl reload xoauth2-bridge   # the same through systemd (SIGHUP)'),
    )
    .action((o: { config: string }) =>
      run(async () => (await tokenCli()).reloadCommand(withConfig(o.config), process.stdout)),
    );

  program
    .command('console-link')
    .description(
      'print a one-time login link for the web console (asks the running daemon over its control socket; works once, within 5 minutes)',
    )
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples(
        'runuser -u xoauth2-bridge -- xoauth2-bridge console-link',
        'ssh -L 9465:127.0.0.1:9465 bridge-host   # then open the link in your browser',
      ),
    )
    .action((o: { config: string }) =>
      run(async () => {
        const { callOwner } = await import('../control/client.js');
        const r = (await callOwner(await withState(o.config), 'console.link'))
          .result as import('../control/ops.js').ConsoleLinkResult;
        if (!r.ok || !r.url) {
          process.stderr.write(`console-link: ${r.message}\n`);
          return 1;
        }
        process.stdout.write(`${r.url}\n`);
        process.stderr.write(
          `Open this address in a browser on this machine (or through ssh -L); it works once, within 5 minutes (until ${r.expiresAt}).\n`,
        );
        return 0;
      }),
    );

  program
    .command('send-test')
    .description('send one test message straight through an account (checks token and Gmail)')
    .requiredOption('--to <addr>', 'recipient')
    .option('--account <name>', 'account (default: the first)')
    .addOption(configOpt())
    .addHelpText(
      'after',
      examples(
        'runuser -u xoauth2-bridge -- xoauth2-bridge send-test --to you@example.com',
        'xoauth2-bridge send-test --to you@example.com --account m365',
      ),
    )
    .action((o: { config: string; to: string; account?: string }) =>
      run(async () =>
        (await import('./sendTest.js')).sendTestCommand(
          await withState(o.config),
          { to: o.to, account: o.account },
          process.stdout,
        ),
      ),
    );

  program
    .command('demo')
    .description(
      'run the bridge against built-in fakes (token endpoint + Gmail, or Microsoft identity + Exchange Online) and relay one message',
    )
    .addOption(
      new Option('--provider <provider>', 'which provider to fake').choices(['google', 'microsoft']).default('google'),
    )
    .addOption(
      new Option(
        '--transport <transport>',
        'Google: relay over SMTP or the Gmail API (scope gmail.send only); Microsoft: SMTP or Microsoft Graph (graph)',
      )
        .choices(['smtp', 'gmail-api', 'graph'])
        .default('smtp'),
    )
    .option(
      '--keep',
      'rehearsal mode: keep the fakes and the bridge running and print where to point a printer, swaks, the console and authorize (Ctrl-C ends it)',
      false,
    )
    .option(
      '--listen <host:port>',
      'with --keep: address of the SMTP listener (e.g. 0.0.0.0:2525 for a printer on the LAN)',
    )
    .addHelpText(
      'after',
      examples(
        'xoauth2-bridge demo',
        'xoauth2-bridge demo --transport gmail-api',
        'xoauth2-bridge demo --provider microsoft',
        'xoauth2-bridge demo --provider microsoft --transport graph',
        'xoauth2-bridge demo --keep --listen 0.0.0.0:2525',
      ),
    )
    .action(
      (o: {
        provider: 'google' | 'microsoft';
        transport: 'smtp' | 'gmail-api' | 'graph';
        keep: boolean;
        listen?: string;
      }) =>
        run(async () => {
          const m = o.listen ? /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(o.listen) : null;
          if (o.listen && (!m || !o.keep)) {
            process.stderr.write(`demo: --listen takes HOST:PORT (e.g. 0.0.0.0:2525) and goes with --keep\n`);
            return 2;
          }
          const listen = m ? { host: m[1], port: Number(m[2]) } : undefined;
          return (await import('./demo.js')).demoCommand(process.stdout, {
            provider: o.provider,
            transport: o.transport,
            keep: o.keep,
            listen,
          });
        }),
    );

  return program;
}

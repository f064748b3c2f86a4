#!/usr/bin/env node
// Generates the man pages and shell completions from the sources they describe, so they
// cannot drift from `--help` and the config schema:
//   xoauth2-bridge.8         every command and option of the commander program (src/cli/program.ts),
//                            with the same texts, defaults and examples --help prints
//   xoauth2-bridge.yaml.5    every config key of the zod schema (src/config/schema.ts: type, allowed
//                            values, default), with the annotated example's comment for it, and the
//                            example itself
//   xoauth2-bridge.bash      bash completion (subcommands, options, option values)
//   _xoauth2-bridge          zsh completion (the same, through compdef)
// Run from the checkout through tsx (it imports the TypeScript sources):
//   node --import tsx packaging/man.mjs OUTDIR          (packaging/deb/build.sh does, at package time)
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { z } from 'zod';
import { buildProgram } from '../src/cli/program.ts';
import { configSchema } from '../src/config/schema.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = process.argv[2];
if (!out) throw new Error('usage: node --import tsx packaging/man.mjs OUTDIR');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const exampleFile = join(root, 'config', 'xoauth2-bridge.example.yaml');
const exampleText = readFileSync(exampleFile, 'utf8');
// The date of the release, not of the build: reproducible pages.
const date = /^## \[[^\]]+\] - (\d{4}-\d{2}-\d{2})/m.exec(readFileSync(join(root, 'CHANGELOG.md'), 'utf8'))?.[1] ?? '';

/** roff-escapes text for a body line (backslashes, leading dots/quotes, hyphens in options). */
const esc = (s) =>
  String(s)
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? '\\&' + l : l))
    .join('\n');

// ---- the program --------------------------------------------------------------------------

const program = buildProgram();
const help = program.createHelp();

/** Every visible command below `cmd`, depth first, with its full name ("queue retry"). */
function commands(cmd, prefix = []) {
  return help.visibleCommands(cmd).flatMap((c) => {
    if (c.name() === 'help') return [];
    const path = [...prefix, c.name()];
    return [{ cmd: c, path }, ...commands(c, path)];
  });
}

/** The text a command's --help prints after its options ("Examples: ..."). */
function afterHelp(cmd) {
  let text = '';
  cmd.configureOutput({ writeOut: (s) => (text += s), writeErr: () => {} });
  cmd.outputHelp();
  const at = text.indexOf('\nExamples:');
  return at < 0 ? '' : text.slice(at + 1).trimEnd();
}

function optionsRoff(cmd) {
  return help
    .visibleOptions(cmd)
    .filter((o) => o.long !== '--help')
    .map((o) => `.TP\n.B ${esc(help.optionTerm(o))}\n${esc(help.optionDescription(o))}`)
    .join('\n');
}

function man8() {
  const all = commands(program);
  const lines = [
    `.TH XOAUTH2\\-BRIDGE 8 "${date}" "xoauth2-bridge ${pkg.version}" "System Administration"`,
    '.SH NAME',
    `xoauth2\\-bridge \\- ${esc(program.description())}`,
    '.SH SYNOPSIS',
    '.B xoauth2\\-bridge',
    '.I command',
    '.RI [ options ]',
    '.br',
    '.B xoauth2\\-bridge',
    '.RB [ \\-V | \\-\\-version | \\-h | \\-\\-help ]',
    '.SH DESCRIPTION',
    esc(
      'A local SMTP-to-XOAUTH2 bridge daemon. Printers, scanners, legacy applications and system MTAs send plain SMTP ' +
        'with a local username and password (or from a trusted network); the bridge spools every message durably ' +
        'and relays it to Gmail or Microsoft 365 with SASL XOAUTH2 over verified TLS, keeping the OAuth tokens fresh.',
    ),
    '.PP',
    esc('The configuration file is described in xoauth2-bridge.yaml(5). Every command below accepts -h, --help.'),
    '.SH COMMANDS',
  ];
  for (const { cmd } of all) {
    lines.push(`.SS "${esc(help.commandUsage(cmd))}"`);
    lines.push(esc(help.commandDescription(cmd)));
    const opts = optionsRoff(cmd);
    if (opts) lines.push(opts);
    const ex = afterHelp(cmd);
    if (ex) lines.push('.PP', '.nf', esc(ex), '.fi');
  }
  lines.push(
    '.SH ENVIRONMENT',
    '.TP',
    '.B XOAUTH2_BRIDGE_CONFIG',
    esc('The config file used when -c is not given (default /etc/xoauth2-bridge/config.yaml).'),
    '.TP',
    '.B CREDENTIALS_DIRECTORY',
    esc('Set by systemd (LoadCredential=): the token-store key is read from $CREDENTIALS_DIRECTORY/token-key.'),
    '.SH FILES',
    '.TP',
    '.I /etc/xoauth2\\-bridge/config.yaml',
    esc('The configuration, root:xoauth2-bridge 0640; see xoauth2-bridge.yaml(5).'),
    '.TP',
    '.I /etc/xoauth2\\-bridge/token\\-key',
    esc('The token-store key (root 0400), passed to the unit with LoadCredential=.'),
    '.TP',
    '.I /var/lib/xoauth2\\-bridge/',
    esc('stateDir: the spool, the token store and generated certificates.'),
    '.TP',
    '.I /usr/share/doc/xoauth2\\-bridge/',
    esc('README.md (the full manual), the annotated example config, changelogs.'),
    '.SH EXIT STATUS',
    esc('0 success, 1 the operation failed, 2 invalid config or usage.'),
    '.SH SEE ALSO',
    '.BR xoauth2\\-bridge.yaml (5),',
    '.BR systemctl (1),',
    '.BR journalctl (1)',
    '',
  );
  return lines.join('\n');
}

// ---- the config schema ---------------------------------------------------------------------

const schema = z.toJSONSchema(configSchema, { unrepresentable: 'any', io: 'input' });

/** Properties of an object schema, merged over the variants of a union of objects (a key's
 * allowed values joined; required only when every variant requires it). */
function props(s) {
  const variants = [s, ...(s.anyOf ?? []), ...(s.oneOf ?? []), ...(s.allOf ?? [])].filter((v) => v.properties);
  const merged = {};
  for (const v of variants) {
    for (const [k, sub] of Object.entries(v.properties)) {
      const prev = merged[k];
      const values = (x) => x.enum ?? (x.const !== undefined ? [x.const] : null);
      if (prev && values(prev) && values(sub))
        merged[k] = { ...prev, const: undefined, enum: [...new Set([...values(prev), ...values(sub)])] };
      else if (!prev) merged[k] = sub;
    }
  }
  const required = new Set(
    Object.keys(merged).filter((k) => variants.length && variants.every((v) => (v.required ?? []).includes(k))),
  );
  return { merged, required };
}
const elementOf = (s) => (s.type === 'array' && s.items && !Array.isArray(s.items) ? s.items : null);
const isObject = (s) => Object.keys(props(s).merged).length > 0;

/** Comments of the annotated example by key path ("listeners[].port"): the key's own lines above it and the one after its value. */
function exampleComments() {
  const found = new Map();
  // The last paragraph only (the file's header is above the first key), without commented-out keys.
  const clean = (c) =>
    (c ?? '')
      .split(/\n\s*\n/)
      .pop()
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^[A-Za-z]+: /.test(l))
      .join(' ');
  const walk = (node, path) => {
    if (isSeq(node)) {
      for (const it of node.items) walk(it, `${path}[]`);
      return;
    }
    if (!isMap(node)) return;
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : '';
      const p = path ? `${path}.${key}` : key;
      const text = [clean(pair.key?.commentBefore), isScalar(pair.value) ? clean(pair.value.comment) : '']
        .filter(Boolean)
        .join(' ');
      if (text && !found.has(p)) found.set(p, text);
      walk(pair.value, p);
    }
  };
  walk(parseDocument(exampleText).contents, '');
  return found;
}

function typeText(s) {
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.const !== undefined && s.const !== null) return JSON.stringify(s.const);
  const el = elementOf(s);
  if (el) return `list of ${isObject(el) ? 'mappings' : typeText(el)}`;
  if (s.anyOf && !isObject(s)) return s.anyOf.map(typeText).join(' or ');
  if (Array.isArray(s.type)) return s.type.join(' or ');
  if (isObject(s)) return 'mapping';
  return s.type ?? 'any';
}

function keysRoff() {
  const comments = exampleComments();
  const lines = [];
  const walk = (s, path, depth) => {
    const { merged, required } = props(s);
    for (const [key, sub] of Object.entries(merged)) {
      const p = path ? `${path}.${key}` : key;
      const facts = [typeText(sub)];
      if (required.has(key)) facts.push('required');
      if (
        sub.default !== undefined &&
        !(typeof sub.default === 'object' && sub.default !== null && !Array.isArray(sub.default))
      )
        facts.push(`default ${JSON.stringify(sub.default)}`);
      const text = esc(`(${facts.join('; ')})${comments.has(p) ? ' ' + comments.get(p) : ''}`);
      // A top-level key is a section; the keys below it are tagged paragraphs.
      lines.push(...(depth === 0 ? [`.SS ${esc(key)}`, text] : ['.TP', `.B ${esc(p)}`, text]));
      const el = elementOf(sub);
      if (el && isObject(el)) walk(el, `${p}[]`, depth + 1);
      else if (isObject(sub)) walk(sub, p, depth + 1);
    }
  };
  walk(schema, '', 0);
  return lines.join('\n');
}

function man5() {
  return [
    `.TH XOAUTH2\\-BRIDGE.YAML 5 "${date}" "xoauth2-bridge ${pkg.version}" "File Formats"`,
    '.SH NAME',
    'xoauth2\\-bridge.yaml \\- configuration of the xoauth2\\-bridge daemon',
    '.SH SYNOPSIS',
    '.I /etc/xoauth2\\-bridge/config.yaml',
    '.SH DESCRIPTION',
    esc(
      'YAML. Unknown keys are errors. ${ENV_VAR} is expanded in any string value (an unset variable is an error). ' +
        'Relative paths are relative to the file. Durations: 30s, 5m, 4h, 5d. Sizes: 25MB, 512KB or a number of bytes. ' +
        'Check a file with: xoauth2-bridge check-config -c FILE. SIGHUP or xoauth2-bridge reload makes the daemon re-read it.',
    ),
    '.PP',
    esc(
      'Each key below with its type, allowed values and default, taken from the schema the daemon validates with; "[]" marks the entries of a list.',
    ),
    '.SH KEYS',
    keysRoff(),
    '.SH EXAMPLE',
    esc('The annotated example (/usr/share/doc/xoauth2-bridge/examples/xoauth2-bridge.example.yaml):'),
    '.PP',
    '.nf',
    esc(exampleText.trimEnd()),
    '.fi',
    '.SH SEE ALSO',
    '.BR xoauth2\\-bridge (8)',
    '',
  ].join('\n');
}

// ---- completions ----------------------------------------------------------------------------

/** Per command path ("" = top level): its subcommands, its options, and option values. */
function completionTable() {
  const entries = [{ cmd: program, path: [] }, ...commands(program)];
  return entries.map(({ cmd, path }) => {
    const subs = help
      .visibleCommands(cmd)
      .map((c) => c.name())
      .filter((n) => n !== 'help');
    const opts = help.visibleOptions(cmd).flatMap((o) => [o.short, o.long].filter(Boolean));
    const values = help
      .visibleOptions(cmd)
      .filter((o) => o.argChoices || /<file>/.test(o.flags))
      .map((o) => ({ names: [o.short, o.long].filter(Boolean), choices: o.argChoices ?? null, file: !o.argChoices }));
    return {
      key: path.join(' '),
      subs,
      opts,
      values,
      descriptions: help
        .visibleCommands(cmd)
        .filter((c) => c.name() !== 'help')
        .map((c) => [c.name(), help.commandDescription(c)]),
    };
  });
}

function bash() {
  const table = completionTable();
  const cases = table
    .map((t) => {
      const valueCases = t.values
        .map(
          (v) =>
            `        ${v.names.join('|')}) ${v.file ? 'COMPREPLY=($(compgen -f -- "$cur"))' : `COMPREPLY=($(compgen -W '${v.choices.join(' ')}' -- "$cur"))`}; return ;;`,
        )
        .join('\n');
      return [
        `    '${t.key}')`,
        valueCases ? `      case $prev in\n${valueCases}\n      esac` : '',
        `      words='${[...t.subs, ...t.opts].join(' ')}' ;;`,
      ]
        .filter(Boolean)
        .join('\n');
    })
    .join('\n');
  const commandPaths = table.filter((t) => t.subs.length).map((t) => t.key);
  return `# bash completion for xoauth2-bridge ${pkg.version}, generated by packaging/man.mjs from the CLI's definition.
_xoauth2_bridge() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} path='' i w words
  # The command path so far: the words that name subcommands, skipping options and their values.
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    [[ $w == -* ]] && continue
    case "$path" in
${commandPaths.map((p) => `      '${p}') case $w in ${table.find((t) => t.key === p).subs.join('|')}) path=\${path:+$path }$w ;; esac ;;`).join('\n')}
    esac
  done
  case "$path" in
${cases}
    *) words='' ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _xoauth2_bridge xoauth2-bridge
`;
}

function zsh() {
  const table = completionTable();
  const q = (s) => s.replace(/'/g, "'\\''").replace(/:/g, '\\:');
  const cases = table
    .map((t) => {
      const items = t.descriptions.map(([n, d]) => `'${q(n)}:${q(d)}'`).join(' ');
      const values = t.values
        .map(
          (v) => `        ${v.names.join('|')}) ${v.file ? '_files' : `compadd -- ${v.choices.join(' ')}`}; return ;;`,
        )
        .join('\n');
      return [
        `    '${t.key}')`,
        values ? `      case ${'$'}words[CURRENT-1] in\n${values}\n      esac` : '',
        t.subs.length
          ? `      if [[ ${'$'}PREFIX != -* ]]; then subs=(${items}); _describe command subs; return; fi`
          : '',
        `      compadd -- ${t.opts.join(' ')} ;;`,
      ]
        .filter(Boolean)
        .join('\n');
    })
    .join('\n');
  const commandPaths = table.filter((t) => t.subs.length).map((t) => t.key);
  return `#compdef xoauth2-bridge
# zsh completion for xoauth2-bridge ${pkg.version}, generated by packaging/man.mjs from the CLI's definition.
_xoauth2-bridge() {
  local cmdpath='' w i
  # Not "path": zsh ties that name to PATH.
  local -a subs
  for ((i = 2; i < CURRENT; i++)); do
    w=${'$'}words[i]
    [[ ${'$'}w == -* ]] && continue
    case "${'$'}cmdpath" in
${commandPaths.map((p) => `      '${p}') case ${'$'}w in ${table.find((t) => t.key === p).subs.join('|')}) cmdpath=${'$'}{cmdpath:+${'$'}cmdpath }${'$'}w ;; esac ;;`).join('\n')}
    esac
  done
  case "${'$'}cmdpath" in
${cases}
  esac
}
_xoauth2-bridge "$@"
`;
}

mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'xoauth2-bridge.8'), man8());
writeFileSync(join(out, 'xoauth2-bridge.yaml.5'), man5());
writeFileSync(join(out, 'xoauth2-bridge.bash'), bash());
writeFileSync(join(out, '_xoauth2-bridge'), zsh());
console.error(`man pages and completions in ${out}`);

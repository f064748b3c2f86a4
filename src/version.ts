// The package version, compiled in (the bundle has no package.json next to it).
import pkg from '../package.json' with { type: 'json' };

export const VERSION: string = pkg.version;

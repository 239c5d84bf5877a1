// tsc does not copy the protobufjs static module (plain JS); place it beside the compiled proto code.
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const outDir = path.join(root, 'dist', 'proto', 'generated');
fs.mkdirSync(outDir, { recursive: true });
for (const name of ['ferry.js', 'ferry.d.ts']) {
  fs.copyFileSync(path.join(root, 'proto', 'generated', name), path.join(outDir, name));
}

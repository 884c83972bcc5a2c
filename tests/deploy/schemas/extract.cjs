// Print the JSON Schema a @kubernetes-models (CommonJS build) model registers.
// usage: node extract.cjs <path to model .js>
const fs = require("fs");
const vm = require("vm");
const file = process.argv[2];
let captured = null;
const stubs = {
  "@kubernetes-models/validate": { register: (id, schema) => { captured = { id, schema }; } },
  "@kubernetes-models/base": {
    Model: class { static setSchema(_model, _id, add) { add(); } },
    createTypeMetaGuard: () => () => false,
    setSchema: (_model, _id, add) => add(),
  },
};
const fakeRequire = (name) => stubs[name] ?? { addSchema: () => {} };
const module_ = { exports: {} };
vm.runInNewContext(fs.readFileSync(file, "utf8"), { require: fakeRequire, exports: module_.exports, module: module_ });
if (!captured) { throw new Error(`no schema registered by ${file}`); }
process.stdout.write(JSON.stringify({ id: captured.id, schema: captured.schema }, null, 1) + "\n");

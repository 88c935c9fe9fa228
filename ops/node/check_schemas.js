// Compile every JSON Schema in contracts/schemas under ajv's strict mode (JSON Schema 2020-12)
// and validate the AsyncAPI document with @asyncapi/parser. With event files as arguments,
// validate each recorded event (one JSON per line) against its subject's schema; a line
// without a subject is a request body (benchmark_request).
// Prints one JSON line of findings; exit 1 on any problem.
"use strict";
const fs = require("fs");
const path = require("path");
const Ajv2020 = require("ajv/dist/2020");
const addFormats = require("ajv-formats");

const schemas = path.resolve(__dirname, "../../contracts/schemas");

function compileAll() {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  const validators = {};
  const problems = [];
  for (const name of fs.readdirSync(schemas).filter((n) => n.endsWith(".schema.json")).sort()) {
    try {
      const schema = JSON.parse(fs.readFileSync(path.join(schemas, name), "utf8"));
      validators[name.replace(".schema.json", "")] = ajv.compile(schema);
    } catch (error) {
      problems.push({ schema: name, error: String(error.message || error) });
    }
  }
  return { validators, problems };
}

async function parseAsyncApi() {
  const { Parser } = require("@asyncapi/parser");
  const parser = new Parser();
  const text = fs.readFileSync(path.join(schemas, "asyncapi.yaml"), "utf8");
  const { diagnostics } = await parser.parse(text);
  return diagnostics
    .filter((d) => d.severity === 0) // errors only; warnings are style hints
    .map((d) => ({ code: d.code, message: d.message, path: (d.path || []).join(".") }));
}

function checkEvents(validators, files) {
  const problems = [];
  let checked = 0;
  for (const file of files) {
    for (const line of fs.readFileSync(file, "utf8").split("\n").filter(Boolean)) {
      const event = JSON.parse(line);
      const validate = validators[event.subject || "benchmark_request"];
      if (!validate) {
        problems.push({ file, error: `no schema for subject ${event.subject}` });
        continue;
      }
      checked += 1;
      if (!validate(event)) problems.push({ file, subject: event.subject, errors: validate.errors });
    }
  }
  return { checked, problems };
}

(async () => {
  const { validators, problems } = compileAll();
  const asyncapi = await parseAsyncApi();
  const events = checkEvents(validators, process.argv.slice(2));
  const report = {
    compiled: Object.keys(validators),
    compile_problems: problems,
    asyncapi_errors: asyncapi,
    events_checked: events.checked,
    event_problems: events.problems,
  };
  console.log(JSON.stringify(report));
  process.exit(problems.length || asyncapi.length || events.problems.length ? 1 : 0);
})();

#!/usr/bin/env node
// Offline validation of Kubernetes manifests (multi-document YAML), no API server needed:
//   1. schema: every document through the kubernetes-models class of its apiVersion/kind
//      (validators generated from the Kubernetes OpenAPI: types, required fields, enums,
//      quantities). The OpenAPI allows unknown fields, so these pass that check...
//   2. typing: ...which is why every document is also typed as the package's TypeScript
//      interface (IJob, IService, ...) in a generated .ts file checked by the TypeScript
//      compiler (tsc --noEmit semantics): an unknown field is an excess property (TS2353).
// Usage: node validate.js FILE... ("-" reads stdin). Prints one line per file; exit 0 when
// every document passes both checks, 1 when one fails (each failure names the file, the
// document, its kind/name and the field), 2 on a usage or read error.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const YAML = require("yaml");
const ts = require("typescript");

function ModelClass(apiVersion, kind) {
  if (typeof apiVersion !== "string" || !/^[a-z0-9.\-]+(\/v[0-9a-z]+)?$/.test(apiVersion)) {
    return null;
  }
  try {
    return require("kubernetes-models/" + apiVersion)[kind] || null;
  } catch (e) {
    return null;
  }
}

// Every document of one file: {index, obj, label} or a list of error strings.
function ReadDocuments(file, errors) {
  const text = file === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(file, "utf8");
  const docs = [];
  YAML.parseAllDocuments(text, { uniqueKeys: true }).forEach((doc, i) => {
    const where = `${file}: document ${i + 1}`;
    for (const e of doc.errors) errors.push(`${where}: YAML: ${e.message}`);
    if (doc.errors.length) return;
    const obj = doc.toJS();
    if (obj === null || obj === undefined) return;  // an empty document, as kubectl skips it
    if (typeof obj !== "object" || Array.isArray(obj)) {
      errors.push(`${where}: not a mapping`);
      return;
    }
    const name = (obj.metadata && obj.metadata.name) || "<no name>";
    docs.push({ index: i + 1, obj, label: `${obj.kind}/${name}`, where });
  });
  return docs;
}

function CheckSchema(doc, errors) {
  const Cls = ModelClass(doc.obj.apiVersion, doc.obj.kind);
  if (!Cls) {
    errors.push(`${doc.where} (${doc.label}): unknown apiVersion/kind ` +
                `${doc.obj.apiVersion}/${doc.obj.kind}`);
    return false;
  }
  try {
    new Cls(doc.obj).validate();
  } catch (e) {
    const details = e.details || e.errors;
    const lines = Array.isArray(details)
      ? details.map((d) => `${d.instancePath || "/"} ${d.message}` +
                           (d.params && d.params.allowedValues ? ` (${d.params.allowedValues.join(", ")})` : ""))
      : [e.message];
    for (const l of lines) errors.push(`${doc.where} (${doc.label}): schema: ${l}`);
  }
  return true;
}

// All documents of all files in one generated .ts program; diagnostics mapped back by line.
function CheckTyping(docs, errors) {
  if (!docs.length) return;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gantry-k8s-validate-"));
  try {
    fs.symlinkSync(path.join(__dirname, "node_modules"), path.join(dir, "node_modules"), "dir");
    const lines = [];
    const owner = [];  // line number (0-based) -> doc
    docs.forEach((doc, i) => {
      const kind = doc.obj.kind;
      lines.push(`import type { I${kind} as T${i} } from "kubernetes-models/${doc.obj.apiVersion}/${kind}";`);
      owner.push(doc);
    });
    docs.forEach((doc, i) => {
      const body = `export const d${i}: T${i} = ${JSON.stringify(doc.obj, null, 2)};`.split("\n");
      for (const l of body) {
        lines.push(l);
        owner.push(doc);
      }
    });
    const file = path.join(dir, "manifests.ts");
    fs.writeFileSync(file, lines.join("\n") + "\n");
    const program = ts.createProgram([file], {
      noEmit: true, strict: true, skipLibCheck: true, types: [],
      target: ts.ScriptTarget.ES2020, module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
    });
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const msg = ts.flattenDiagnosticMessageText(d.messageText, " ");
      if (!d.file || d.file.fileName !== file.split(path.sep).join("/")) {
        errors.push(`typing: TS${d.code}: ${msg}`);
        continue;
      }
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      const doc = owner[line];
      errors.push(`${doc.where} (${doc.label}): typing: TS${d.code}: ${msg} ` +
                  `[at: ${lines[line].trim()}]`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function Main(argv) {
  if (!argv.length || argv.includes("-h") || argv.includes("--help")) {
    process.stderr.write("usage: node validate.js FILE... (\"-\" = stdin)\n");
    return 2;
  }
  const errors = [];
  const all = [];
  const summary = [];
  for (const file of argv) {
    let docs;
    try {
      docs = ReadDocuments(file, errors);
    } catch (e) {
      process.stderr.write(`k8s-validate: cannot read ${file}: ${e.message}\n`);
      return 2;
    }
    const known = docs.filter((d) => CheckSchema(d, errors));
    all.push(...known);
    summary.push(`${file}: ${docs.length} document(s): ${docs.map((d) => d.label).join(", ")}`);
  }
  CheckTyping(all, errors);
  for (const s of summary) process.stdout.write(`checked ${s}\n`);
  for (const e of errors) process.stdout.write(`error: ${e}\n`);
  process.stdout.write(errors.length ? `k8s-validate: ${errors.length} error(s)\n`
                                     : `k8s-validate: ok (schema + typing, ${all.length} document(s))\n`);
  return errors.length ? 1 : 0;
}

process.exitCode = Main(process.argv.slice(2));

// `gantry render k8s` as a Kubernetes user relies on it: the manifests of the examples, a
// command job and a multi-rank GPU job pass the Kubernetes schemas and typing offline
// (tools/k8s-validate: kubernetes-models validate() + TypeScript excess-property checks; it
// must catch a planted unknown field, bad quantity and bad enum), names and references are
// consistent (DNS rules, selector vs labels, subdomain = Service, env, completions = ranks),
// what cannot run on Kubernetes is refused, and two `gantry train` processes given exactly a
// rendered pod's environment (MASTER_ADDR = 127.0.0.1: no cluster DNS here) train to the end
// together and, rerun as recreated pods, resume from the shared directory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/job_spec.h"
#include "tests/integration/comm_launcher.h"
#include "train/checkpoint.h"

namespace gantry {
namespace {

namespace fs = std::filesystem;

const std::string kSource = GANTRY_SOURCE_DIR;
const std::string kValidator = kSource + "/tools/k8s-validate";
constexpr char kIndexField[] = "metadata.annotations['batch.kubernetes.io/job-completion-index']";

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/gantry-render-k8s-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct Outcome {
  int code = -1;
  std::string out, err;
};

// Runs argv (no shell semantics for its words) with a time limit; stdout and stderr apart.
Outcome Exec(const std::vector<std::string>& argv, const TempDir& dir) {
  std::string cmd = "timeout 300";
  for (const auto& a : argv) cmd += " " + Quote(a);
  cmd += " > " + Quote(dir / "exec.out") + " 2> " + Quote(dir / "exec.err");
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ReadFile(dir / "exec.out"),
          ReadFile(dir / "exec.err")};
}

Outcome Render(const std::vector<std::string>& args, const TempDir& dir) {
  std::vector<std::string> argv = {GANTRY_BINARY, "render", "k8s"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Exec(argv, dir);
}

// Why the npm tools cannot run here, or "" when they can (scripts/setup.sh installs them).
std::string ValidatorMissing() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not installed";
  for (const char* pkg : {"kubernetes-models", "typescript", "yaml"}) {
    if (!fs::exists(kValidator + "/node_modules/" + pkg + "/package.json")) {
      return std::string("npm package ") + pkg +
             " is not installed in tools/k8s-validate "
             "(run scripts/setup.sh)";
    }
  }
  return "";
}

// CI runs scripts/setup.sh first: there a node without the packages is a setup bug, not a skip.
#define SKIP_WITHOUT_VALIDATOR()                                                         \
  if (const std::string why = ValidatorMissing(); !why.empty()) {                        \
    if (std::getenv("CI") != nullptr && why.rfind("npm package", 0) == 0) FAIL() << why; \
    GTEST_SKIP() << why;                                                                 \
  }

// ---- the rendering cases

struct Case {
  std::string label, spec_path;
  std::vector<std::string> flags;
  std::string name, name_space;  // expected object name; "" = none given
  int port = 29500;
  std::string mount;  // --pvc mount path; "" = no --pvc
};

std::string WriteSpec(const TempDir& dir, const std::string& file, const std::string& yaml) {
  WriteFile(dir / file, yaml);
  return dir / file;
}

std::vector<Case> Cases(const TempDir& dir) {
  const std::string command = WriteSpec(dir, "torch-ddp.yaml", R"(name: torch-ddp
kind: command
resources: {ranks: 3, cpus_per_rank: 2}
command:
  argv: [/usr/bin/python3, train.py, --epochs, "10", "--lr=0.1", "--tag=$(RANK)-$$"]
  env: {OMP_NUM_THREADS: "1", NCCL_DEBUG: INFO, EMPTY: "", PATTERN: "a$(B)$c"}
  workdir: /workspace
restarts: {max: 2}
)");
  // No workdir: the image's WORKDIR stays, even with a claim mounted (`python train.py`).
  const std::string script = WriteSpec(dir, "script.yaml", R"(name: script
kind: command
resources: {ranks: 2}
command: {argv: [python3, train.py]}
)");
  const std::string gpu = WriteSpec(dir, "gpt-gpu.yaml", R"(name: gpt-gpu
kind: train
resources: {ranks: 4, gpus_per_rank: 1, cpus_per_rank: 8, labels: {zone: a, "nvidia.com/gpu.product": H100}}
model: {type: gpt, vocab: 8192, context: 128, d_model: 256, layers: 4, heads: 4}
data: {uri: "ceph://gantry/datasets/fortunes", batch_per_rank: 8}
optimizer: {type: adamw, lr: 3.0e-4}
train: {steps: 2000, checkpoint_every: 200, checkpoint_uri: "ceph://gantry/ckpt/gpt-gpu", device: cuda}
comm: {backend: nccl, timeout_s: 300}
restarts: {max: 3}
)");
  return {
      {"gpt-tiny",
       kSource + "/examples/gpt-tiny.yaml",
       {"--pvc", "gantry-shared"},
       "gpt-tiny",
       "",
       29500,
       "/var/lib/gantry"},
      {"mlp",
       kSource + "/examples/mlp.yaml",
       {"--pvc", "ckpt-claim:/mnt/shared", "--namespace", "ml", "--image", "gantry:test", "--port",
        "29611", "--name", "mlp-a"},
       "mlp-a",
       "ml",
       29611,
       "/mnt/shared"},
      {"command",
       command,
       {"--image", "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime"},
       "torch-ddp",
       ""},
      {"gpu", gpu, {"-n", "team-a"}, "gpt-gpu", "team-a"},
      {"script", script, {"--pvc", "data"}, "script", "", 29500, "/var/lib/gantry"},
  };
}

// ---- our own checks (what neither kubernetes-models nor tsc checks)

bool Dns1123Label(const std::string& s) {
  return s.size() <= 63 && std::regex_match(s, std::regex("[a-z0-9]([-a-z0-9]*[a-z0-9])?"));
}
bool Dns1035Label(const std::string& s) {
  return s.size() <= 63 && std::regex_match(s, std::regex("[a-z]([-a-z0-9]*[a-z0-9])?"));
}
bool Dns1123Subdomain(const std::string& s) {
  return s.size() <= 253 && std::regex_match(s, std::regex("[a-z0-9]([-a-z0-9]*[a-z0-9])?"
                                                           "(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"));
}
bool IanaServiceName(const std::string& s) {  // a port name
  return s.size() <= 15 && std::regex_match(s, std::regex("[a-z0-9]([-a-z0-9]*[a-z0-9])?")) &&
         s.find("--") == std::string::npos && std::regex_search(s, std::regex("[a-z]"));
}

std::map<std::string, YAML::Node> EnvOf(const YAML::Node& container) {
  std::map<std::string, YAML::Node> env;
  for (size_t i = 0; i < container["env"].size(); ++i) {
    const YAML::Node e = container["env"][i];
    const std::string name = e["name"].as<std::string>();
    EXPECT_TRUE(std::regex_match(name, std::regex("[A-Za-z_][A-Za-z0-9_]*"))) << name;
    EXPECT_FALSE(env.count(name)) << "env " << name << " given twice";
    env[name] = e;
  }
  return env;
}

std::string Value(const std::map<std::string, YAML::Node>& env, const std::string& name) {
  auto it = env.find(name);
  if (it == env.end() || !it->second["value"]) return "<unset>";
  return it->second["value"].as<std::string>();
}

void CheckLabels(const YAML::Node& meta, const std::string& job) {
  EXPECT_EQ(meta["labels"]["app.kubernetes.io/name"].as<std::string>(""), "gantry");
  EXPECT_EQ(meta["labels"]["gantry.dev/job"].as<std::string>(""), job);
}

void CheckManifests(const std::string& text, const Case& c) {
  SCOPED_TRACE("case " + c.label + ":\n" + text);
  const std::vector<YAML::Node> docs = YAML::LoadAll(text);
  ASSERT_EQ(docs.size(), 3u);
  const YAML::Node &cm = docs[0], &svc = docs[1], &job = docs[2];
  EXPECT_EQ(cm["kind"].as<std::string>(), "ConfigMap");
  EXPECT_EQ(svc["kind"].as<std::string>(), "Service");
  EXPECT_EQ(job["kind"].as<std::string>(), "Job");
  for (const auto& d : docs) {
    CheckLabels(d["metadata"], c.name);
    EXPECT_EQ(d["metadata"]["namespace"].as<std::string>(""), c.name_space);
  }
  // The spec the pods read is the input, renamed as asked.
  auto input = ParseJobSpecFile(c.spec_path);
  ASSERT_TRUE(input.ok()) << input.status().ToString();
  auto spec = ParseJobSpec(cm["data"]["job.yaml"].as<std::string>(), "configmap");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  input->name = c.name;
  input->source = spec->source;
  EXPECT_EQ(*spec, *input);
  EXPECT_TRUE(cm["immutable"].as<bool>());
  const int ranks = spec->resources.ranks;

  // Names: the Job names pods <job>-<index> (DNS-1123 labels); a Service is a DNS-1035 label.
  const std::string job_name = job["metadata"]["name"].as<std::string>();
  const std::string svc_name = svc["metadata"]["name"].as<std::string>();
  const std::string cm_name = cm["metadata"]["name"].as<std::string>();
  EXPECT_EQ(job_name, c.name);
  EXPECT_TRUE(Dns1123Label(job_name + "-" + std::to_string(ranks - 1))) << job_name;
  EXPECT_TRUE(Dns1035Label(svc_name)) << svc_name;
  EXPECT_TRUE(Dns1123Subdomain(cm_name)) << cm_name;
  if (!c.name_space.empty()) {
    EXPECT_TRUE(Dns1123Label(c.name_space));
  }

  // The Service selects exactly the Job's pods, publishes them unready, and is headless.
  const YAML::Node s = svc["spec"];
  EXPECT_EQ(s["clusterIP"].as<std::string>(), "None");
  EXPECT_TRUE(s["publishNotReadyAddresses"].as<bool>());
  const YAML::Node tmpl = job["spec"]["template"];
  ASSERT_TRUE(s["selector"].IsMap() && s["selector"].size() > 0);
  for (const auto& kv : s["selector"]) {
    EXPECT_EQ(tmpl["metadata"]["labels"][kv.first.as<std::string>()].as<std::string>(""),
              kv.second.as<std::string>())
        << "selector " << kv.first.as<std::string>() << " does not match the pod labels";
  }
  EXPECT_EQ(job["metadata"]["labels"]["gantry.dev/job"].as<std::string>(),
            tmpl["metadata"]["labels"]["gantry.dev/job"].as<std::string>());

  // The gang: one pod per rank, all at once, Indexed; restarts.max gang restarts.
  const YAML::Node js = job["spec"];
  EXPECT_EQ(js["completionMode"].as<std::string>(), "Indexed");
  EXPECT_EQ(js["completions"].as<int>(), ranks);
  EXPECT_EQ(js["parallelism"].as<int>(), ranks);
  EXPECT_EQ(js["backoffLimit"].as<int>(), spec->restarts.max * ranks);
  const YAML::Node pod = tmpl["spec"];
  EXPECT_EQ(pod["restartPolicy"].as<std::string>(), "Never");
  EXPECT_EQ(pod["subdomain"].as<std::string>(), svc_name);
  ASSERT_EQ(pod["containers"].size(), 1u);
  const YAML::Node ctr = pod["containers"][0];
  EXPECT_TRUE(Dns1123Label(ctr["name"].as<std::string>()));
  EXPECT_EQ(ctr["image"].as<std::string>().empty(), false);

  // The env contract: rank 0 at <job>-0.<service>, the port the Service and the pod expose.
  const auto env = EnvOf(ctr);
  EXPECT_EQ(Value(env, "WORLD_SIZE"), std::to_string(ranks));
  EXPECT_EQ(Value(env, "MASTER_ADDR"), job_name + "-0." + svc_name);
  EXPECT_EQ(Value(env, "MASTER_PORT"), std::to_string(c.port));
  EXPECT_EQ(s["ports"][0]["port"].as<int>(), c.port);
  EXPECT_EQ(ctr["ports"][0]["containerPort"].as<int>(), c.port);
  for (const auto& p : {s["ports"][0]["name"], ctr["ports"][0]["name"]}) {
    EXPECT_TRUE(IanaServiceName(p.as<std::string>()));
  }
  EXPECT_EQ(env.count("JOB_COMPLETION_INDEX"), 0u);  // Kubernetes sets it
  if (spec->kind == JobKind::kTrain) {
    EXPECT_EQ(env.count("RANK"), 0u);  // gantry train takes JOB_COMPLETION_INDEX
    std::vector<std::string> cmd;
    for (const auto& w : ctr["command"]) cmd.push_back(w.as<std::string>());
    EXPECT_EQ(cmd, (std::vector<std::string>{"gantry", "train", "/etc/gantry/job.yaml"}));
  } else {
    for (const char* name : {"RANK", "GROUP_RANK", "ROLE_RANK"}) {
      ASSERT_TRUE(env.count(name)) << name;
      EXPECT_EQ(env.at(name)["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>(), kIndexField);
    }
    // Kubernetes expands $(NAME) and turns $$ into $ in command and env values: every $ is
    // doubled so the pod runs the spec's text.
    auto literal = [](std::string t) {
      for (size_t at = 0; (at = t.find('$', at)) != std::string::npos; at += 2) t.insert(at, "$");
      return t;
    };
    std::vector<std::string> cmd, want;
    for (const auto& w : ctr["command"]) cmd.push_back(w.as<std::string>());
    for (const auto& a : spec->command.argv) want.push_back(literal(a));
    EXPECT_EQ(cmd, want);
    for (const auto& [k, v] : spec->command.env) EXPECT_EQ(Value(env, k), literal(v)) << k;
    EXPECT_EQ(ctr["workingDir"].as<std::string>(""), spec->command.workdir);
    EXPECT_EQ(Value(env, "TORCHELASTIC_USE_AGENT_STORE"), "False");
  }

  // Resources from the spec.
  const YAML::Node res = ctr["resources"];
  EXPECT_EQ(res["requests"]["cpu"].as<std::string>(),
            std::to_string(spec->resources.cpus_per_rank));
  EXPECT_EQ(res["limits"]["cpu"].as<std::string>(), std::to_string(spec->resources.cpus_per_rank));
  if (spec->resources.gpus_per_rank > 0) {
    EXPECT_EQ(res["limits"]["nvidia.com/gpu"].as<std::string>(),
              std::to_string(spec->resources.gpus_per_rank));
  } else {
    EXPECT_FALSE(res["limits"]["nvidia.com/gpu"]);
  }
  for (const auto& [k, v] : spec->resources.labels) {
    EXPECT_EQ(pod["nodeSelector"][k].as<std::string>(""), v);
  }

  // Every mount names a volume of the pod; the spec volume is this ConfigMap's job.yaml.
  std::set<std::string> volumes;
  for (const auto& v : pod["volumes"]) {
    const std::string n = v["name"].as<std::string>();
    EXPECT_TRUE(Dns1123Label(n)) << n;
    volumes.insert(n);
    if (v["configMap"]) {
      EXPECT_EQ(v["configMap"]["name"].as<std::string>(), cm_name);
      EXPECT_EQ(v["configMap"]["items"][0]["key"].as<std::string>(), "job.yaml");
    }
  }
  std::map<std::string, std::string> mounts;
  for (const auto& m : ctr["volumeMounts"]) {
    EXPECT_TRUE(volumes.count(m["name"].as<std::string>())) << m["name"].as<std::string>();
    mounts[m["mountPath"].as<std::string>()] = m["name"].as<std::string>();
  }
  EXPECT_EQ(mounts["/etc/gantry"], "job-spec");
  if (!c.mount.empty()) {  // the claim is mounted, and a train job runs there
    EXPECT_EQ(mounts[c.mount], "shared");
    if (spec->kind == JobKind::kTrain) {
      EXPECT_EQ(ctr["workingDir"].as<std::string>(""), c.mount);
    }
  } else {
    EXPECT_EQ(mounts.size(), 2u);  // the spec and /dev/shm
  }
}

TEST(RenderK8s, ManifestsAreConsistent) {
  TempDir dir;
  for (const Case& c : Cases(dir)) {
    std::vector<std::string> args = {c.spec_path};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    Outcome r = Render(args, dir);
    ASSERT_EQ(r.code, 0) << c.label << ": " << r.err;
    CheckManifests(r.out, c);
    // -o FILE writes the same text.
    args.insert(args.end(), {"-o", dir / (c.label + ".yaml")});
    ASSERT_EQ(Render(args, dir).code, 0);
    EXPECT_EQ(ReadFile(dir / (c.label + ".yaml")), r.out);
  }
}

TEST(RenderK8s, ManifestsPassKubernetesSchemasAndTyping) {
  SKIP_WITHOUT_VALIDATOR();
  TempDir dir;
  std::vector<std::string> argv = {"node", kValidator + "/validate.js"};
  for (const Case& c : Cases(dir)) {
    std::vector<std::string> args = {c.spec_path, "-o", dir / (c.label + ".yaml")};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    Outcome r = Render(args, dir);
    ASSERT_EQ(r.code, 0) << c.label << ": " << r.err;
    argv.push_back(dir / (c.label + ".yaml"));
  }
  Outcome v = Exec(argv, dir);
  EXPECT_EQ(v.code, 0) << v.out << v.err;
  const std::string documents = std::to_string(3 * (argv.size() - 2));  // 3 per manifest
  EXPECT_NE(v.out.find("k8s-validate: ok (schema + typing, " + documents + " document(s))"),
            std::string::npos)
      << v.out << v.err;
}

// The validator is only worth its pass if it fails what the API server would refuse.
TEST(RenderK8s, ValidatorCatchesUnknownFieldsBadQuantitiesAndEnums) {
  SKIP_WITHOUT_VALIDATOR();
  TempDir dir;
  Outcome r = Render({kSource + "/examples/gpt-tiny.yaml", "--pvc", "shared"}, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  struct Mutation {
    std::string what, from, to, expect;  // the rendered text `from` becomes `to`
  };
  const std::vector<Mutation> mutations = {
      {"unknown pod field", "      restartPolicy: Never\n",
       "      restartPolicy: Never\n      restartPolicyy: Never\n", "TS2353"},
      {"bad quantity", "          limits:\n            cpu: \"1\"\n",
       "          limits:\n            cpu: \"one\"\n", "must match format \"quantity\""},
      {"bad enum", "completionMode: Indexed", "completionMode: indexed", "allowed values"},
      {"string for an integer", "completions: 1\n", "completions: \"1\"\n", "must be integer"},
      {"missing container name", "      - name: gantry\n        image:", "      - image:",
       "must have required property name"},
  };
  std::vector<std::string> argv = {"node", kValidator + "/validate.js"};
  for (size_t i = 0; i < mutations.size(); ++i) {
    const size_t at = r.out.find(mutations[i].from);
    ASSERT_NE(at, std::string::npos) << mutations[i].from;
    std::string text = r.out;
    text.replace(at, mutations[i].from.size(), mutations[i].to);
    argv.push_back(dir / ("bad-" + std::to_string(i) + ".yaml"));
    WriteFile(argv.back(), text);
  }
  Outcome v = Exec(argv, dir);  // one node process for all: each file's errors name it
  EXPECT_EQ(v.code, 1) << v.out << v.err;
  for (size_t i = 0; i < mutations.size(); ++i) {
    const std::string prefix = "error: " + argv[i + 2] + ": document 3 (Job/gpt-tiny): ";
    bool found = false;
    for (size_t at = v.out.find(prefix); at != std::string::npos; at = v.out.find(prefix, at + 1)) {
      found |= v.out.substr(at, v.out.find('\n', at) - at).find(mutations[i].expect) !=
               std::string::npos;
    }
    EXPECT_TRUE(found) << mutations[i].what << ": no error with '" << mutations[i].expect
                       << "' for " << argv[i + 2] << " in:\n"
                       << v.out;
  }
}

TEST(RenderK8s, RefusesWhatCannotRunOnKubernetes) {
  TempDir dir;
  const std::string good = kSource + "/examples/gpt-tiny.yaml";
  struct Refusal {
    std::string what;
    std::vector<std::string> args;
    std::vector<std::string> expect;  // substrings of the error
  };
  const std::string malformed = WriteSpec(dir, "bad.yaml",
                                          "name: bad\nkind: train\nmodel: {type: gpt, vocab: 64, "
                                          "context: 8, d_model: 16, layers: 1, head: 2}\n");
  const std::string serve = WriteSpec(
      dir, "serve.yaml", "name: gpt-serve\nkind: serve\nserve: {model_dir: models/gpt}\n");
  const std::string digit =
      WriteSpec(dir, "digit.yaml", "name: 7b\nkind: command\ncommand: {argv: [\"true\"]}\n");
  const std::vector<Refusal> refusals = {
      {"malformed spec", {malformed}, {"bad.yaml:3", "model.head", "unknown field"}},
      {"serve job", {serve}, {"kind: serve cannot be rendered", "gantry serve"}},
      {"local checkpoint without --pvc",
       {good},
       {"train.checkpoint_uri '.gantry/ckpt/gpt-tiny'", "local path", "shared storage", "--pvc",
        "ceph://"}},
      {"absolute checkpoint outside the mount",
       {good, "--pvc", "claim:/mnt/shared", "--name", "gpt"},
       {"outside the --pvc mount /mnt/shared"}},
      {"name not DNS-1035",
       {good, "--pvc", "c", "--name", "GPT_Tiny"},
       {"--name 'GPT_Tiny'", "DNS-1035"}},
      {"spec name starting with a digit", {digit}, {"name '7b'", "DNS-1035", "--name"}},
      {"name too long for the ranks",
       {digit, "--name", std::string(62, 'a'), "--pvc", "c"},
       {"hostname", "at most 63"}},
      {"bad claim", {good, "--pvc", "Bad_Claim"}, {"DNS-1123 subdomain"}},
      {"mount over the spec", {good, "--pvc", "c:/etc"}, {"overlaps /etc/gantry"}},
  };
  // An absolute checkpoint path needs its own spec.
  const std::string abs = WriteSpec(dir, "abs.yaml",
                                    "name: gpt\nkind: train\nmodel: {type: mlp, widths: [4, "
                                    "2]}\ntrain: {checkpoint_uri: \"file:///data/ckpt\"}\n");
  for (Refusal r : refusals) {
    if (r.what == "absolute checkpoint outside the mount") r.args[0] = abs;
    SCOPED_TRACE(r.what);
    Outcome run = Render(r.args, dir);
    EXPECT_EQ(run.code, 1) << run.err;
    EXPECT_TRUE(run.out.empty()) << run.out;
    EXPECT_NE(run.err.find("gantry: error: "), std::string::npos) << run.err;
    for (const auto& e : r.expect)
      EXPECT_NE(run.err.find(e), std::string::npos) << e << " in:\n" << run.err;
  }
}

// ---- the env contract, end to end without Kubernetes

struct Pod {
  pid_t pid = -1;
  std::string log;
};

// Starts what the rendered container runs, in `workdir`, with exactly the rendered env (plus
// what Kubernetes adds: JOB_COMPLETION_INDEX, and PATH from the image); `spec_file` stands for
// the ConfigMap mounted at /etc/gantry, 127.0.0.1 for rank 0's DNS name.
Pod StartPod(const YAML::Node& ctr, int index, const std::string& spec_file,
             const std::string& workdir, const std::string& log) {
  std::vector<std::string> argv;
  for (const auto& w : ctr["command"]) {
    std::string a = w.as<std::string>();
    if (argv.empty() && a == "gantry") a = GANTRY_BINARY;
    if (a == "/etc/gantry/job.yaml") a = spec_file;
    argv.push_back(a);
  }
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin",
                                  "JOB_COMPLETION_INDEX=" + std::to_string(index)};
  for (const auto& e : ctr["env"]) {
    const std::string name = e["name"].as<std::string>();
    std::string value = e["value"] ? e["value"].as<std::string>() : "";
    if (e["valueFrom"]) {
      EXPECT_EQ(e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>(), kIndexField);
      value = std::to_string(index);
    }
    if (name == "MASTER_ADDR") value = "127.0.0.1";
    env.push_back(name + "=" + value);
  }
  Pod p{-1, log};
  p.pid = fork();
  if (p.pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (chdir(workdir.c_str()) != 0) _exit(126);
    std::vector<char*> a, e;
    for (auto& s : argv) a.push_back(s.data());
    for (auto& s : env) e.push_back(s.data());
    a.push_back(nullptr);
    e.push_back(nullptr);
    execve(a[0], a.data(), e.data());
    _exit(127);
  }
  return p;
}

// Waits for every pod (SIGKILL after the limit); exit codes, -1 for a killed one.
std::vector<int> WaitPods(std::vector<Pod>& pods, std::chrono::seconds limit) {
  std::vector<int> codes(pods.size(), -1);
  const auto until = std::chrono::steady_clock::now() + limit;
  for (size_t i = 0; i < pods.size(); ++i) {
    int status = 0;
    while (waitpid(pods[i].pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        kill(pods[i].pid, SIGKILL);
        waitpid(pods[i].pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  return codes;
}

TEST(RenderK8s, RenderedEnvironmentTrainsTwoRanksToTheEndAndResumes) {
  TempDir dir;
  const std::string spec_path = WriteSpec(dir, "tiny.yaml", R"(name: tiny-k8s
kind: train
resources: {ranks: 2, cpus_per_rank: 1}
model: {type: mlp, widths: [8, 16, 4]}
data: {uri: synthetic, batch_per_rank: 4, seed: 7, synthetic_samples: 256}
optimizer: {type: sgd, lr: 0.05}
train: {steps: 30, log_every: 10, checkpoint_every: 10, keep_last: 2, checkpoint_uri: ckpt}
comm: {timeout_s: 60}
restarts: {max: 2}
)");
  const int port = comm::testing::FreePort();
  Outcome r =
      Render({spec_path, "--pvc", "shared:/mnt/shared", "--port", std::to_string(port)}, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<YAML::Node> docs = YAML::LoadAll(r.out);
  ASSERT_EQ(docs.size(), 3u);
  const YAML::Node job = docs[2];
  const YAML::Node ctr = job["spec"]["template"]["spec"]["containers"][0];
  const int ranks = job["spec"]["completions"].as<int>();
  ASSERT_EQ(ranks, 2);
  ASSERT_EQ(ctr["workingDir"].as<std::string>(), "/mnt/shared");
  // The ConfigMap's spec file and the claim's directory, as the pod sees them.
  const std::string spec_file = dir / "etc-gantry/job.yaml";
  WriteFile(spec_file, docs[0]["data"]["job.yaml"].as<std::string>());
  const std::string shared = dir / "mnt-shared";
  fs::create_directories(shared);

  for (int attempt = 0; attempt < 2; ++attempt) {  // 1: the first pods; 2: recreated pods
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    std::vector<Pod> pods;
    for (int i = 0; i < ranks; ++i) {
      pods.push_back(
          StartPod(ctr, i, spec_file, shared,
                   dir / ("pod-" + std::to_string(attempt) + "-" + std::to_string(i) + ".log")));
    }
    const std::vector<int> codes = WaitPods(pods, std::chrono::seconds(180));
    std::string logs;
    for (int i = 0; i < ranks; ++i)
      logs += "--- pod " + std::to_string(i) + "\n" + ReadFile(pods[i].log);
    for (int i = 0; i < ranks; ++i) EXPECT_EQ(codes[i], 0) << logs;
    for (int i = 0; i < ranks; ++i) {
      const std::string log = ReadFile(pods[i].log);
      EXPECT_TRUE(std::regex_search(log, std::regex(R"("ranks connected".*"mode":"env".*"rank":)" +
                                                    std::to_string(i) + R"(,"world":2)")))
          << logs;
    }
    const std::string rank0 = ReadFile(pods[0].log);
    if (attempt == 0) {
      EXPECT_NE(rank0.find("\"train done\""), std::string::npos) << logs;
    } else {
      EXPECT_NE(rank0.find("resumed from checkpoint"), std::string::npos) << logs;
      EXPECT_NE(rank0.find("already at the last step"), std::string::npos) << logs;
    }
  }
  // The checkpoint is on the "claim", at the last step.
  auto cp = train::Checkpointer::Open(shared + "/ckpt", 2);
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  auto ck = (*cp)->ReadNewestValid();
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  EXPECT_EQ(ck->meta.step, 30);
}

}  // namespace
}  // namespace gantry

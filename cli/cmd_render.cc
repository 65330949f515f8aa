// `gantry render k8s JOB.yaml`: the Kubernetes manifests that run a job as a gang, for
// `kubectl apply -f -`: a ConfigMap with the canonical spec, a headless Service (stable DNS
// for rank 0's TCP store) and an Indexed batch/v1 Job, one pod per rank. It only renders:
// nothing here talks to an API server. Every choice is explained in docs/kubernetes.md.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <string>

#include "base/job_spec.h"
#include "base/tunables.h"
#include "cli/command.h"
#include "gantry_config.h"

namespace gantry::cli {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kSpecDir[] = "/etc/gantry";  // the ConfigMap's mount; the spec is job.yaml in it
constexpr char kSpecKey[] = "job.yaml";
constexpr char kDefaultMount[] = "/var/lib/gantry";  // --pvc CLAIM without :MOUNT_PATH
constexpr char kContainer[] = "gantry";
constexpr char kPortName[] = "store";  // rank 0's TCP store (torch's store for command jobs)
constexpr char kIndexField[] = "metadata.annotations['batch.kubernetes.io/job-completion-index']";
constexpr char kDns1123Label[] = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
constexpr char kDns1035Label[] = "[a-z]([-a-z0-9]*[a-z0-9])?";
constexpr size_t kMaxLabel = 63;

struct RenderOptions {
  std::string job, image, name_space, name, pvc, output;
  int port = 29500;
  bool image_given = false;
};

struct Pvc {
  std::string claim, mount;
};

bool Matches(const std::string& s, const std::string& re) {
  return std::regex_match(s, std::regex(re));
}

// ---- YAML output: block style, strings plain only where no YAML 1.1/1.2 reader could take
// them for anything else (a number, a boolean, null), double-quoted (JSON escapes are valid
// YAML) otherwise; a multi-line string ending in one newline is a literal block (`|`).

std::string Scalar(const Json& v) {
  if (!v.is_string()) return v.dump();
  const std::string s = v.get<std::string>();
  static const std::regex plain("[A-Za-z_/][A-Za-z0-9_./-]*");
  std::string lower = s;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}) {
    if (lower == word) return v.dump();
  }
  return std::regex_match(s, plain) ? s : v.dump();
}

bool LiteralBlockFits(const Json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  if (s.size() < 2 || s.back() != '\n' || s[s.size() - 2] == '\n' || s[0] == ' ' || s[0] == '\n') {
    return false;
  }
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\n') || c == 0x7f) return false;
  }
  return true;
}

void EmitBlock(std::ostream& out, const Json& node, size_t indent, bool inline_first);

void EmitAfterKey(std::ostream& out, const Json& v, size_t indent) {
  if (v.is_object() && !v.empty()) {
    out << "\n";
    EmitBlock(out, v, indent + 2, false);
  } else if (v.is_array() && !v.empty()) {
    out << "\n";
    EmitBlock(out, v, indent, false);  // "- " at the key's indentation, as kubectl writes it
  } else if (LiteralBlockFits(v)) {
    out << " |\n";
    std::istringstream lines(v.get<std::string>());
    for (std::string line; std::getline(lines, line);) {
      out << (line.empty() ? "" : std::string(indent + 2, ' ') + line) << "\n";
    }
  } else {
    out << " " << (v.is_object() ? "{}" : v.is_array() ? "[]" : Scalar(v)) << "\n";
  }
}

void EmitBlock(std::ostream& out, const Json& node, size_t indent, bool inline_first) {
  bool first = true;
  auto pad = [&] {
    if (!(first && inline_first)) out << std::string(indent, ' ');
    first = false;
  };
  if (node.is_object()) {
    for (const auto& [key, value] : node.items()) {
      pad();
      out << Scalar(Json(key)) << ":";
      EmitAfterKey(out, value, indent);
    }
    return;
  }
  for (const Json& item : node) {
    pad();
    if ((item.is_object() || item.is_array()) && !item.empty()) {
      out << "- ";
      EmitBlock(out, item, indent + 2, true);
    } else {
      out << "- " << (item.is_object() ? "{}" : item.is_array() ? "[]" : Scalar(item)) << "\n";
    }
  }
}

// ---- checks

// The name names the Job, the headless Service (a DNS-1035 label: it must start with a
// letter) and every pod's hostname `<name>-<index>` (a DNS-1123 label, at most 63 characters).
Status CheckJobName(const std::string& name, int ranks, const std::string& from) {
  if (name.size() > kMaxLabel || !Matches(name, kDns1035Label)) {
    return InvalidArgumentError(
        from + " '" + name + "' cannot name the Kubernetes objects: it names the headless "
        "Service, so it must be a DNS-1035 label: lower-case letters, digits and '-', starting "
        "with a letter, ending with a letter or digit, at most 63 characters (" + kDns1035Label +
        ")" + (from == "--name" ? "" : "; pass --name to render under another name"));
  }
  const std::string last_host = name + "-" + std::to_string(ranks - 1);
  if (last_host.size() > kMaxLabel) {
    return InvalidArgumentError(
        from + " '" + name + "' is too long for " + std::to_string(ranks) + " ranks: the last "
        "rank's pod hostname '" + last_host + "' has " + std::to_string(last_host.size()) +
        " characters and a hostname is a DNS-1123 label of at most 63; use a name of at most " +
        std::to_string(kMaxLabel - last_host.size() + name.size()) + " characters (--name)");
  }
  return OkStatus();
}

bool Within(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto p = path.lexically_normal(), d = dir.lexically_normal();
  auto [dir_end, path_end] = std::mismatch(d.begin(), d.end(), p.begin(), p.end());
  return dir_end == d.end() || (std::next(dir_end) == d.end() && dir_end->empty());
}

StatusOr<std::optional<Pvc>> ParsePvc(const std::string& text) {
  if (text.empty()) return std::optional<Pvc>();
  const size_t colon = text.find(':');
  Pvc p{text.substr(0, colon), colon == std::string::npos ? kDefaultMount : text.substr(colon + 1)};
  const std::string subdomain = std::string(kDns1123Label) + "(\\." + kDns1123Label + ")*";
  if (p.claim.size() > 253 || !Matches(p.claim, subdomain)) {
    return InvalidArgumentError("--pvc " + text + ": the claim name '" + p.claim +
                                "' must be a DNS-1123 subdomain (lower-case letters, digits, '-' "
                                "and '.', at most 253 characters)");
  }
  std::filesystem::path mount(p.mount);
  if (!mount.is_absolute() || mount.lexically_normal() == "/" ||
      p.mount.find_first_of(":\n") != std::string::npos) {
    return InvalidArgumentError("--pvc " + text + ": the mount path '" + p.mount +
                                "' must be an absolute directory other than /");
  }
  for (const char* taken : {kSpecDir, "/dev/shm"}) {
    if (Within(mount, taken) || Within(taken, mount)) {
      return InvalidArgumentError("--pvc " + text + ": the mount path '" + p.mount + "' overlaps " +
                                  taken + ", which the pod mounts itself");
    }
  }
  p.mount = mount.lexically_normal().string();
  while (p.mount.size() > 1 && p.mount.back() == '/') p.mount.pop_back();
  return std::optional<Pvc>(p);
}

// Every pod the Job creates, the ones a restart creates included, starts on a fresh
// filesystem, possibly on another node: a restarted gang resumes only from checkpoints on
// storage that outlives its pods.
Status CheckCheckpointStorage(const JobSpec& spec, const std::optional<Pvc>& pvc) {
  const bool defaulted = spec.train.checkpoint_uri.empty();
  const std::string uri = defaulted ? ".gantry/ckpt/" + spec.name : spec.train.checkpoint_uri;
  if (uri.starts_with("ceph://")) return OkStatus();
  const std::string path = uri.starts_with("file://") ? uri.substr(7) : uri;
  const std::string what = spec.source + ": train.checkpoint_uri '" + uri + "'" +
                           (defaulted ? " (the default of an empty checkpoint_uri)" : "");
  if (path.find("://") != std::string::npos) {
    return InvalidArgumentError(what + " has an unknown scheme; use ceph:// or a path");
  }
  if (!pvc) {
    return FailedPreconditionError(
        what + " is a local path: on Kubernetes a pod's files die with the pod, and the pods a "
               "restart creates (on any node) resume from the last checkpoint only when it is "
               "on shared storage. Use a ceph:// checkpoint_uri, or pass --pvc "
               "CLAIM[:MOUNT_PATH] (a ReadWriteMany PersistentVolumeClaim; a relative path is "
               "then resolved under MOUNT_PATH, default " + kDefaultMount + ")");
  }
  const std::filesystem::path p(path);
  if (!Within(p.is_absolute() ? p : std::filesystem::path(pvc->mount) / p, pvc->mount)) {
    return FailedPreconditionError(what + " is outside the --pvc mount " + pvc->mount +
                                   ", so it would not survive a restart: give a path under " +
                                   pvc->mount + ", or a relative one inside it");
  }
  return OkStatus();
}

// ---- manifests

Json Labels(const JobSpec& spec) {
  return Json{{"app.kubernetes.io/name", "gantry"},
              {"app.kubernetes.io/component", JobKindName(spec.kind)},
              {"gantry.dev/job", spec.name}};
}

Json Metadata(const std::string& name, const JobSpec& spec, const RenderOptions& o) {
  Json m;
  m["name"] = name;
  if (!o.name_space.empty()) m["namespace"] = o.name_space;
  m["labels"] = Labels(spec);
  return m;
}

// Kubernetes expands $(NAME) in command, args and env values, and turns $$ into $: every $
// is doubled so a pod runs exactly the text gantry submit would.
std::string Literal(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '$') out += '$';
    out += ch;
  }
  return out;
}

Json Var(const std::string& name, const std::string& value) {
  return Json{{"name", name}, {"value", Literal(value)}};
}

Json IndexVar(const std::string& name) {
  return Json{{"name", name}, {"valueFrom", {{"fieldRef", {{"fieldPath", kIndexField}}}}}};
}

void SetVar(Json& env, const Json& var) {
  for (Json& v : env) {
    if (v["name"] == var["name"]) {
      v = var;
      return;
    }
  }
  env.push_back(var);
}

// What each rank's process gets: torchrun's variables, the rank from the Indexed Job's
// completion index (JOB_COMPLETION_INDEX, which Kubernetes sets; command jobs also get it as
// RANK, GROUP_RANK and ROLE_RANK, which scripts read), one rank per pod.
Json Environment(const JobSpec& spec, const RenderOptions& o) {
  const std::string world = std::to_string(spec.resources.ranks);
  const std::string cpus = std::to_string(spec.resources.cpus_per_rank);
  Json env =
      Json::array({Var("WORLD_SIZE", world), Var("MASTER_ADDR", spec.name + "-0." + spec.name),
                   Var("MASTER_PORT", std::to_string(o.port)), Var("LOCAL_RANK", "0"),
                   Var("LOCAL_WORLD_SIZE", "1")});
  if (spec.kind == JobKind::kTrain) {
    // The container sees every core of its node; the rank's CPU limit is what it may use.
    env.push_back(Var("GANTRY_NUM_THREADS", cpus));
    env.push_back(Var("OMP_NUM_THREADS", cpus));
    return env;
  }
  for (const char* name : {"RANK", "GROUP_RANK", "ROLE_RANK"}) env.push_back(IndexVar(name));
  for (const auto& [name, value] :
       {std::pair<std::string, std::string>{"GROUP_WORLD_SIZE", world},
        {"ROLE_NAME", "default"},
        {"ROLE_WORLD_SIZE", world},
        {"TORCHELASTIC_RUN_ID", spec.name},
        {"TORCHELASTIC_MAX_RESTARTS", std::to_string(spec.restarts.max)},
        {"TORCHELASTIC_USE_AGENT_STORE", "False"},
        {"OMP_NUM_THREADS", cpus},
        {"PYTHONUNBUFFERED", "1"}}) {
    env.push_back(Var(name, value));
  }
  for (const auto& [name, value] : spec.command.env)
    SetVar(env, Var(name, value));  // the spec wins
  return env;
}

Json Container(const JobSpec& spec, const RenderOptions& o, const std::optional<Pvc>& pvc) {
  Json c;
  c["name"] = kContainer;
  c["image"] = o.image;
  c["command"] = spec.kind == JobKind::kTrain
                     ? Json::array({"gantry", "train", std::string(kSpecDir) + "/" + kSpecKey})
                     : Json::array();
  if (spec.kind == JobKind::kCommand) {
    for (const std::string& a : spec.command.argv) c["command"].push_back(Literal(a));
  }
  if (spec.kind == JobKind::kCommand) {
    // The image's WORKDIR unless the spec names one (a script run as `python train.py`
    // relies on it).
    if (!spec.command.workdir.empty()) c["workingDir"] = spec.command.workdir;
  } else if (pvc) {
    c["workingDir"] = pvc->mount;  // relative checkpoint (and data) paths land on the claim
  }
  c["env"] = Environment(spec, o);
  c["ports"] = Json::array({{{"name", kPortName}, {"containerPort", o.port}, {"protocol", "TCP"}}});
  const std::string cpus = std::to_string(spec.resources.cpus_per_rank);
  Json limits = {{"cpu", cpus}};
  if (spec.resources.gpus_per_rank > 0) {
    limits["nvidia.com/gpu"] = std::to_string(spec.resources.gpus_per_rank);
  }
  c["resources"] = {{"requests", {{"cpu", cpus}}}, {"limits", limits}};
  c["volumeMounts"] =
      Json::array({{{"name", "job-spec"}, {"mountPath", kSpecDir}, {"readOnly", true}},
                   {{"name", "dshm"}, {"mountPath", "/dev/shm"}}});
  if (pvc) c["volumeMounts"].push_back({{"name", "shared"}, {"mountPath", pvc->mount}});
  return c;
}

Json ConfigMap(const JobSpec& spec, const RenderOptions& o) {
  Json cm = {{"apiVersion", "v1"}, {"kind", "ConfigMap"}};
  cm["metadata"] = Metadata(spec.name + "-spec", spec, o);
  cm["immutable"] = true;  // a restarted rank must read the spec its peers read
  cm["data"] = {{kSpecKey, JobSpecToYaml(spec)}};
  return cm;
}

Json Service(const JobSpec& spec, const RenderOptions& o) {
  Json svc = {{"apiVersion", "v1"}, {"kind", "Service"}};
  svc["metadata"] = Metadata(spec.name, spec, o);
  svc["spec"] = {
      {"clusterIP", "None"},
      {"publishNotReadyAddresses", true},  // DNS for rank 0 before any pod is Ready
      {"selector", {{"app.kubernetes.io/name", "gantry"}, {"gantry.dev/job", spec.name}}},
      {"ports", Json::array({{{"name", kPortName},
                              {"port", o.port},
                              {"targetPort", o.port},
                              {"protocol", "TCP"}}})}};
  return svc;
}

Json Job(const JobSpec& spec, const RenderOptions& o, const std::optional<Pvc>& pvc) {
  Json pod;
  pod["restartPolicy"] = "Never";     // a failed rank fails its pod; the Job controller replaces it
  pod["subdomain"] = spec.name;       // <name>-<index>.<name> resolves through the Service
  pod["enableServiceLinks"] = false;  // no *_PORT/*_SERVICE_HOST variables over GANTRY_*, MASTER_*
  if (!spec.resources.labels.empty()) pod["nodeSelector"] = Json(spec.resources.labels);
  pod["containers"] = Json::array({Container(spec, o, pvc)});
  pod["volumes"] =
      Json::array({{{"name", "job-spec"},
                    {"configMap",
                     {{"name", spec.name + "-spec"},
                      {"items", Json::array({{{"key", kSpecKey}, {"path", kSpecKey}}})}}}},
                   {{"name", "dshm"}, {"emptyDir", {{"medium", "Memory"}}}}});
  if (pvc) {
    pod["volumes"].push_back(
        {{"name", "shared"}, {"persistentVolumeClaim", {{"claimName", pvc->claim}}}});
  }
  Json job = {{"apiVersion", "batch/v1"}, {"kind", "Job"}};
  job["metadata"] = Metadata(spec.name, spec, o);
  const int64_t ranks = spec.resources.ranks;
  job["spec"] = {
      {"completionMode", "Indexed"},
      {"completions", ranks},
      {"parallelism", ranks},
      // One gang restart fails every rank's pod (the survivors stop on comm errors), so
      // restarts.max gang restarts are restarts.max x ranks pod failures.
      {"backoffLimit", int64_t(spec.restarts.max) * ranks},
      // A pod evicted or preempted (node drain, preemption) is not counted itself; its
      // peers, which then stop on comm errors, are (they cannot be told from a crash).
      {"podFailurePolicy",
       {{"rules", Json::array({{{"action", "Ignore"},
                                {"onPodConditions", Json::array({{{"type", "DisruptionTarget"},
                                                                  {"status", "True"}}})}}})}}},
      {"template", {{"metadata", {{"labels", Labels(spec)}}}, {"spec", pod}}}};
  return job;
}

Status CheckNodeSelector(const JobSpec& spec) {
  const std::string name = "[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?";
  const std::string key =
      "(" + std::string(kDns1123Label) + "(\\." + kDns1123Label + ")*/)?" + name;
  for (const auto& [k, v] : spec.resources.labels) {
    const size_t slash = k.find('/');
    const std::string k_name = slash == std::string::npos ? k : k.substr(slash + 1);
    if (!Matches(k, key) || k_name.size() > kMaxLabel || v.size() > kMaxLabel ||
        !(v.empty() || Matches(v, name))) {
      return InvalidArgumentError(
          spec.source + ": resources.labels '" + k + ": " + v +
          "' becomes the pods' "
          "nodeSelector, so it must be a Kubernetes label: key [prefix/]name and value of at "
          "most 63 characters each, alphanumeric at both ends, '-', '_' and '.' inside");
    }
  }
  return OkStatus();
}

StatusOr<std::string> RenderK8s(const RenderOptions& o) {
  GANTRY_ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpecFile(o.job));
  if (spec.kind == JobKind::kServe) {
    return UnimplementedError(
        spec.source +
        ": kind: serve cannot be rendered: this build has no `gantry serve` for a "
        "Deployment to run (docs/job-spec.md); render a train or command job");
  }
  if (!o.name.empty()) spec.name = o.name;
  GANTRY_RETURN_IF_ERROR(CheckJobName(spec.name, spec.resources.ranks,
                                      o.name.empty() ? spec.source + ": name" : "--name"));
  GANTRY_RETURN_IF_ERROR(ValidateJobSpec(spec));
  if (!o.name_space.empty() &&
      (o.name_space.size() > kMaxLabel || !Matches(o.name_space, kDns1123Label))) {
    return InvalidArgumentError("--namespace '" + o.name_space +
                                "' must be a DNS-1123 label: "
                                "lower-case letters, digits and '-', alphanumeric at both ends, "
                                "at most 63 characters");
  }
  if (o.image.empty() || o.image.find_first_of(" \t\n") != std::string::npos) {
    return InvalidArgumentError("--image '" + o.image +
                                "' must be an image reference without spaces");
  }
  GANTRY_ASSIGN_OR_RETURN(const std::optional<Pvc> pvc, ParsePvc(o.pvc));
  if (spec.kind == JobKind::kTrain) GANTRY_RETURN_IF_ERROR(CheckCheckpointStorage(spec, pvc));
  GANTRY_RETURN_IF_ERROR(CheckNodeSelector(spec));

  std::ostringstream out;
  out << "# gantry render k8s " << o.job << ": job " << spec.name << " (" << JobKindName(spec.kind)
      << ", " << spec.resources.ranks << " rank(s)); apply with kubectl apply -f, remove with "
      << "kubectl delete -f (docs/kubernetes.md)\n";
  bool first = true;
  for (const Json& doc : {ConfigMap(spec, o), Service(spec, o), Job(spec, o, pvc)}) {
    if (!first) out << "---\n";
    first = false;
    EmitBlock(out, doc, 0, false);
  }
  return out.str();
}

int RunRenderK8s(const RenderOptions& o) {
  StatusOr<std::string> text = RenderK8s(o);
  if (!text.ok()) return ReportError(text.status());
  if (!o.image_given) {
    std::cerr << "gantry: note: no --image: the pods run " << o.image
              << " (what the image must hold: docs/kubernetes.md)" << std::endl;
  }
  if (o.output.empty() || o.output == "-") {
    std::cout << *text << std::flush;
    return std::cout ? kExitOk : ReportError(InternalError("cannot write to stdout"));
  }
  std::ofstream f(o.output, std::ios::binary | std::ios::trunc);
  f << *text;
  f.close();
  if (!f) return ReportError(PermissionDeniedError("-o " + o.output + ": cannot write the file"));
  return kExitOk;
}

CommandRegistration kRender(
    "render", "Render a job as manifests for another system: k8s (Indexed Job + headless Service)",
    [](CLI::App& app) -> CommandHandler {
      app.require_subcommand(1);
      auto o = std::make_shared<RenderOptions>();
      o->image = TunableString("IMAGE", std::string("gantry:") + GANTRY_VERSION);
      CLI::App* k8s = app.add_subcommand(
          "k8s",
          "Kubernetes: a ConfigMap (the spec), a headless Service and an Indexed Job, one "
          "pod per rank, as multi-document YAML for kubectl apply -f -");
      k8s->add_option("job", o->job, "job spec YAML (kind: train | command)")->required();
      k8s->add_option("--image", o->image,
                      "container image with gantry on its PATH (default $GANTRY_IMAGE or "
                      "gantry:" GANTRY_VERSION ")")
          ->each([o](const std::string&) { o->image_given = true; });
      k8s->add_option("--namespace,-n", o->name_space,
                      "metadata.namespace of every object (default: kubectl's current "
                      "namespace)");
      k8s->add_option("--name", o->name,
                      "name of the objects and the job (default: the spec's name)");
      k8s->add_option("--port", o->port, "MASTER_PORT: rank 0's TCP store (default 29500)")
          ->check(CLI::Range(1, 65535));
      k8s->add_option("--pvc", o->pvc,
                      std::string("CLAIM[:MOUNT_PATH]: mount a ReadWriteMany "
                                  "PersistentVolumeClaim in every pod (default path ") +
                          kDefaultMount + ") and run there, so local checkpoint paths survive "
                                          "restarts");
      k8s->add_option("-o,--output", o->output, "write to this file instead of stdout");
      return [o]() { return RunRenderK8s(*o); };
    });

}  // namespace
}  // namespace gantry::cli

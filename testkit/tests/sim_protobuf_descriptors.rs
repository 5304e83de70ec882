//! The protobuf descriptors kube-sim embeds (`src/sim/kubernetes.binpb`), regenerated
//! from Kubernetes' `generated.proto` files and compared byte for byte.
//!
//! This file is also the generator: `scripts/generate-sim-protobuf` runs it with
//! `KUBERNAUT_WRITE_SIM_PROTOBUF=1`, which writes the file instead of comparing. The
//! protos come from Go's module cache at the versions `control-plane/go.mod` pins
//! (`go mod download` in that module fetches them); without them the test says it
//! skipped.
//!
//! Besides compiling, the generator records in each field's `json_name` what Go's JSON
//! encoding of the Kubernetes type does with it (read from the struct tags of the Go
//! types beside each proto): the JSON name (`$ref`, `apiGroup`, `expression`, …),
//! `,inline` for an embedded struct whose fields JSON shows in the parent (`Volume`'s
//! `volumeSource`), and `,omit` for a field Go leaves out of JSON when it holds its zero
//! value although protobuf carries it (a non-pointer scalar with `omitempty`, a
//! non-pointer struct with `omitzero`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost_reflect::prost::Message;
use prost_reflect::prost_types::FileDescriptorSet;
use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};

/// The Go modules whose protos kube-sim needs, and where their protos import them from.
const MODULES: &[&str] = &[
    "k8s.io/api",
    "k8s.io/apimachinery",
    "k8s.io/apiextensions-apiserver",
    "k8s.io/kube-aggregator",
];

/// The proto files compiled (with everything they import): the group versions kube-sim
/// serves, `autoscaling/v1` for the `scale` subresource and `authentication/v1` for
/// `serviceaccounts/token`.
const FILES: &[&str] = &[
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/admissionregistration/v1/generated.proto",
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/authentication/v1/generated.proto",
    "k8s.io/api/autoscaling/v1/generated.proto",
    "k8s.io/api/autoscaling/v2/generated.proto",
    "k8s.io/api/batch/v1/generated.proto",
    "k8s.io/api/certificates/v1/generated.proto",
    "k8s.io/api/coordination/v1/generated.proto",
    "k8s.io/api/discovery/v1/generated.proto",
    "k8s.io/api/events/v1/generated.proto",
    "k8s.io/api/flowcontrol/v1/generated.proto",
    "k8s.io/api/networking/v1/generated.proto",
    "k8s.io/api/node/v1/generated.proto",
    "k8s.io/api/policy/v1/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
    "k8s.io/api/scheduling/v1/generated.proto",
    "k8s.io/api/storage/v1/generated.proto",
    "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto",
    "k8s.io/apimachinery/pkg/runtime/generated.proto",
    "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/generated.proto",
    "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1/generated.proto",
];

fn testkit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Each module's directory in Go's module cache, or why it is not there.
fn module_dirs() -> Result<HashMap<&'static str, PathBuf>, String> {
    let go_mod_path = testkit_dir().join("control-plane/go.mod");
    let go_mod = std::fs::read_to_string(&go_mod_path)
        .map_err(|e| format!("reading {}: {e}", go_mod_path.display()))?;
    let cache = std::env::var_os("GOMODCACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("GOPATH").map(|p| PathBuf::from(p).join("pkg/mod")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join("go/pkg/mod")))
        .ok_or("no GOMODCACHE, GOPATH or HOME")?;
    let mut dirs = HashMap::new();
    for module in MODULES {
        // The `replace` line pins the version: `k8s.io/api => k8s.io/api v0.37.2`.
        let prefix = format!("{module} => {module} ");
        let version = go_mod
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix))
            .ok_or_else(|| format!("{} pins no version of {module}", go_mod_path.display()))?;
        let dir = cache.join(format!("{module}@{}", version.trim()));
        if !dir.is_dir() {
            return Err(format!("{} is missing", dir.display()));
        }
        dirs.insert(*module, dir);
    }
    Ok(dirs)
}

/// What Go's JSON encoding does with one field of a Kubernetes type.
struct GoField {
    json: String,
    omit_empty: bool,
    omit_zero: bool,
    inline: bool,
    pointer: bool,
}

/// The fields of the Go structs in `dir`, by struct name and protobuf field number.
fn go_fields(dir: &Path) -> HashMap<String, HashMap<i32, GoField>> {
    let mut structs: HashMap<String, HashMap<i32, GoField>> = HashMap::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "go") && !p.to_string_lossy().ends_with("_test.go")
        })
        .collect();
    entries.sort();
    for path in entries {
        let source = std::fs::read_to_string(&path).expect("read Go source");
        let mut current: Option<String> = None;
        for line in source.lines() {
            if let Some(rest) = line.strip_prefix("type ") {
                current = rest
                    .strip_suffix(" struct {")
                    .map(|name| name.trim().to_owned());
                continue;
            }
            if line == "}" {
                current = None;
                continue;
            }
            let Some(name) = &current else { continue };
            let Some((decl, tag)) = line.split_once('`') else {
                continue;
            };
            let Some(proto) = tag_value(tag, "protobuf") else {
                continue;
            };
            let Some(number) = proto.split(',').nth(1).and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            // A field without a JSON name of its own (`json:"-"`, no tag) keeps protoc's.
            let Some(json) = tag_value(tag, "json").filter(|j| !j.starts_with('-')) else {
                continue;
            };
            let mut parts = json.split(',');
            let json_name = parts.next().unwrap_or_default().to_owned();
            let options: Vec<&str> = parts.collect();
            let tokens: Vec<&str> = decl.split_whitespace().collect();
            let embedded = tokens.len() == 1;
            let go_type = tokens.last().copied().unwrap_or_default();
            structs.entry(name.clone()).or_default().insert(
                number,
                GoField {
                    inline: json_name.is_empty() && (embedded || options.contains(&"inline")),
                    json: json_name,
                    omit_empty: options.contains(&"omitempty"),
                    omit_zero: options.contains(&"omitzero"),
                    pointer: go_type.starts_with('*'),
                },
            );
        }
    }
    structs
}

/// The value of `key:"…"` in a Go struct tag.
fn tag_value<'a>(tag: &'a str, key: &str) -> Option<&'a str> {
    let start = tag.find(&format!("{key}:\""))? + key.len() + 2;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// Compiles the protos (source info stripped) and writes Go's JSON facts into the
/// fields' `json_name`.
fn generate(dirs: &HashMap<&'static str, PathBuf>) -> Vec<u8> {
    let include = tempfile::tempdir().expect("tempdir");
    for (module, dir) in dirs {
        let link = include.path().join(module);
        std::fs::create_dir_all(link.parent().expect("a parent")).expect("mkdir");
        std::os::unix::fs::symlink(dir, &link).expect("symlink a module");
    }
    let mut compiler = protox::Compiler::new([include.path()]).expect("compiler");
    compiler.include_imports(true).include_source_info(false);
    compiler
        .open_files(FILES)
        .unwrap_or_else(|e| panic!("compiling the protos: {e:?}"));
    let mut set: FileDescriptorSet = compiler.file_descriptor_set();
    for file in &mut set.file {
        let name = file.name().to_owned();
        let Some((module, dir)) = dirs
            .iter()
            .find(|(m, _)| name.starts_with(&format!("{m}/")))
        else {
            continue;
        };
        let relative = Path::new(&name[module.len() + 1..])
            .parent()
            .expect("a directory")
            .to_owned();
        let structs = go_fields(&dir.join(relative));
        for message in &mut file.message_type {
            let Some(fields) = structs.get(message.name()) else {
                continue;
            };
            for field in &mut message.field {
                let Some(go) = fields.get(&field.number()) else {
                    continue;
                };
                let scalar = !matches!(field.r#type(), Type::Message | Type::Group)
                    && field.label() != Label::Repeated;
                let omit = !go.pointer
                    && if scalar {
                        go.omit_empty || go.omit_zero
                    } else {
                        go.omit_zero
                    };
                field.json_name = Some(if go.inline {
                    ",inline".to_owned()
                } else if omit {
                    format!("{},omit", go.json)
                } else {
                    go.json.clone()
                });
            }
        }
    }
    set.encode_to_vec()
}

#[test]
fn the_embedded_descriptors_match_the_pinned_kubernetes_protos() {
    let dirs = match module_dirs() {
        Ok(dirs) => dirs,
        Err(why) => {
            eprintln!(
                "skipped: Kubernetes' protos are not in Go's module cache ({why}); \
                 run `go mod download` in testkit/control-plane"
            );
            return;
        }
    };
    let generated = generate(&dirs);
    let path = testkit_dir().join("src/sim/kubernetes.binpb");
    if std::env::var_os("KUBERNAUT_WRITE_SIM_PROTOBUF").is_some() {
        std::fs::write(&path, &generated).expect("write the descriptors");
        eprintln!("wrote {} ({} bytes)", path.display(), generated.len());
        return;
    }
    let embedded = std::fs::read(&path).expect("the embedded descriptors");
    assert!(
        embedded == generated,
        "{} differs from what the protos give ({} bytes embedded, {} generated): run scripts/generate-sim-protobuf",
        path.display(),
        embedded.len(),
        generated.len()
    );
}

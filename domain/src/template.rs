//! Manifest templates: Jinja (minijinja) templates that render to Kubernetes YAML.
//!
//! Rendering is strict (an undefined variable is an error, never an empty string),
//! does no HTML escaping (the output is YAML), cannot read files or the environment
//! (no loader, no such functions), and runs on a fuel budget so a hostile template
//! cannot spin. Templates written for the original kubernaut (`{{image}}`,
//! `{{service}}`, `{{replicas}}`) render unchanged.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

use crate::release::{Attributes, ImageRef, ServiceName, Version};
use crate::validation::storable_text;

const TEMPLATE_NAME: &str = "manifest";
/// The variables every deploy supplies.
pub const DEPLOY_VARIABLES: [&str; 2] = ["cluster", "namespace"];
/// Instructions one render may execute; far above what any real manifest needs.
const FUEL: u64 = 1_000_000;
/// The most text one render may produce.
const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;

/// A template that compiles and renders into Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestTemplate {
    source: String,
    required_variables: BTreeSet<String>,
}

/// Why a template was refused at release time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTemplate {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} bytes, not {0}", max = ManifestTemplate::MAX_BYTES)]
    TooLarge(usize),
    #[error("must not contain the character U+0000 (NUL)")]
    Nul,
    #[error("does not compile: {0}")]
    Syntax(String),
    #[error("does not render: {0}")]
    Render(String),
    #[error("does not render to Kubernetes YAML: {0}")]
    NotKubernetes(String),
    /// These variables' values would change the manifest's structure (see
    /// [`ManifestTemplate::render`]).
    #[error("the values of {} would change the manifest's structure", .0.join(", "))]
    ValueChangesStructure(Vec<String>),
}

/// Why a template could not be rendered for a deploy or a preview.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the template needs variables that were not supplied: {}", .0.join(", "))]
    MissingVariables(Vec<String>),
    #[error("the template failed to render: {0}")]
    Template(String),
    #[error("the rendered manifest is not Kubernetes YAML: {0}")]
    NotKubernetes(String),
    /// These variables' values would add, remove or reshape documents, objects, keys or
    /// list items that the template did not write.
    #[error("the values of {} would change the manifest's structure", .0.join(", "))]
    ValueChangesStructure(Vec<String>),
}

/// The variables a template is rendered with; all values are strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVariables(BTreeMap<String, String>);

impl TemplateVariables {
    /// The variables a release supplies: `service`, `version`, `image` and every attribute.
    pub fn for_release(
        service: &ServiceName,
        version: &Version,
        image: &ImageRef,
        attributes: &Attributes,
    ) -> Self {
        let mut variables = Self::default();
        for (name, value) in attributes.iter() {
            variables.set(name.as_str(), value);
        }
        variables.set("service", service.as_str());
        variables.set("version", version.as_str());
        variables.set("image", image.as_str());
        variables
    }

    /// Sets `name`, replacing an earlier value: later sources win.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_owned(), value.to_owned());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The render context: every variable at the top level, and all of them again under
    /// `attributes`, so names that are not Jinja identifiers (`team.name`) stay reachable
    /// as `attributes["team.name"]`.
    fn context(&self) -> BTreeMap<&str, minijinja::Value> {
        let mut context: BTreeMap<&str, minijinja::Value> = self
            .0
            .iter()
            .map(|(name, value)| (name.as_str(), minijinja::Value::from(value.as_str())))
            .collect();
        context.insert(
            "attributes",
            minijinja::Value::from_pairs(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        );
        context
    }
}

/// A rendered manifest: its text and the Kubernetes objects it holds, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedManifest {
    pub text: String,
    pub objects: Vec<Value>,
}

impl ManifestTemplate {
    pub const MAX_BYTES: usize = 1024 * 1024;

    /// Checks what can be checked without the release's variables: size and syntax.
    ///
    /// # Errors
    /// [`InvalidTemplate`] when the template is empty, too large or does not compile.
    pub fn check_source(source: &str) -> Result<(), InvalidTemplate> {
        check_size(source)?;
        let env = environment();
        env.template_from_named_str(TEMPLATE_NAME, source)
            .map(|_| ())
            .map_err(|e| InvalidTemplate::Syntax(describe(&e)))
    }

    /// Accepts `source` as a release's template when it compiles and renders, with the
    /// release's variables and a placeholder for each variable only a deploy can supply
    /// (`cluster`, `namespace`, their attributes), into one or more YAML documents each
    /// with `apiVersion`, `kind` and `metadata.name`. Those deploy-time variables are
    /// recorded as [`ManifestTemplate::required_variables`].
    ///
    /// # Errors
    /// [`InvalidTemplate`] naming the first problem found.
    pub fn parse(
        source: &str,
        service: &ServiceName,
        version: &Version,
        image: &ImageRef,
        attributes: &Attributes,
    ) -> Result<Self, InvalidTemplate> {
        check_size(source)?;
        let env = environment();
        let template = env
            .template_from_named_str(TEMPLATE_NAME, source)
            .map_err(|e| InvalidTemplate::Syntax(describe(&e)))?;
        let mut variables = TemplateVariables::for_release(service, version, image, attributes);
        let required_variables: BTreeSet<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !variables.contains(name) && name != "attributes")
            // Built-in functions (`range`, `dict`) are not variables, but `namespace`,
            // a Jinja built-in too, is always the deploy's namespace here.
            .filter(|name| {
                DEPLOY_VARIABLES.contains(&name.as_str())
                    || !env.globals().any(|(global, _)| global == name)
            })
            .collect();
        for name in &required_variables {
            variables.set(name, name);
        }
        let text = render_text(&template, &variables).map_err(InvalidTemplate::Render)?;
        checked_objects(&template, &variables, &text).map_err(|refused| match refused {
            Refused::NotKubernetes(error) => InvalidTemplate::NotKubernetes(error),
            Refused::ValueChangesStructure(names) => InvalidTemplate::ValueChangesStructure(names),
        })?;
        Ok(Self {
            source: source.to_owned(),
            required_variables,
        })
    }

    /// Rebuilds a template that was accepted before (read back from storage).
    pub fn from_trusted(source: String, required_variables: BTreeSet<String>) -> Self {
        Self {
            source,
            required_variables,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the release does not supply and a deploy must.
    pub fn required_variables(&self) -> &BTreeSet<String> {
        &self.required_variables
    }

    /// Renders the template with `variables`. No value can change the manifest's
    /// structure: values are text put where the template says, and one that would add,
    /// remove or reshape a document, object, key or list item (a line break and a key, a
    /// `, key: value` in a flow mapping, a closing quote...) is refused, naming it.
    ///
    /// # Errors
    /// [`RenderError::MissingVariables`] naming every required variable not supplied,
    /// [`RenderError::ValueChangesStructure`] naming the values that would reshape the
    /// manifest, or the render or YAML failure.
    pub fn render(&self, variables: &TemplateVariables) -> Result<RenderedManifest, RenderError> {
        let missing: Vec<String> = self
            .required_variables
            .iter()
            .filter(|name| !variables.contains(name))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(RenderError::MissingVariables(missing));
        }
        let env = environment();
        let template = env
            .template_from_named_str(TEMPLATE_NAME, &self.source)
            .map_err(|e| RenderError::Template(describe(&e)))?;
        let text = render_text(&template, variables).map_err(RenderError::Template)?;
        let objects =
            checked_objects(&template, variables, &text).map_err(|refused| match refused {
                Refused::NotKubernetes(error) => RenderError::NotKubernetes(error),
                Refused::ValueChangesStructure(names) => RenderError::ValueChangesStructure(names),
            })?;
        Ok(RenderedManifest { text, objects })
    }
}

fn check_size(source: &str) -> Result<(), InvalidTemplate> {
    if source.trim().is_empty() {
        return Err(InvalidTemplate::Empty);
    }
    if source.len() > ManifestTemplate::MAX_BYTES {
        return Err(InvalidTemplate::TooLarge(source.len()));
    }
    storable_text(source).map_err(|_| InvalidTemplate::Nul)?;
    Ok(())
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    // YAML is whitespace-sensitive: block tags on their own lines leave no blank line
    // or stray indentation behind (as Ansible and Salt render YAML), and the final
    // newline is kept as written.
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are a valid syntax"),
    );
    env
}

fn render_text(
    template: &minijinja::Template<'_, '_>,
    variables: &TemplateVariables,
) -> Result<String, String> {
    let text = template
        .render(variables.context())
        .map_err(|e| describe(&e))?;
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(format!(
            "the output is {} bytes, more than the {MAX_OUTPUT_BYTES} allowed",
            text.len()
        ));
    }
    Ok(text)
}

/// Characters that can carry YAML structure anywhere in a value: line breaks and other
/// control characters, flow indicators, quotes, the escape of double-quoted text, and
/// the byte-order mark.
fn hazardous_anywhere(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            ',' | '[' | ']' | '{' | '}' | '\'' | '"' | '\\' | '\u{2028}' | '\u{2029}' | '\u{feff}'
        )
}

/// Characters that carry structure at the start of a value: indicators of a sequence
/// entry, a key, a comment, an anchor, an alias, a tag, a block scalar, a directive or a
/// reserved one.
const HAZARDOUS_FIRST: [char; 12] = ['-', '?', ':', '#', '&', '*', '!', '|', '>', '%', '@', '`'];

/// The reason given for a value that would change the manifest's structure.
pub const CHANGES_STRUCTURE: &str = "would change the manifest's structure (a line break, a quote, a flow or comment indicator...): values are text the template places, they cannot add or reshape documents, keys or list items";

/// Whether a value could change YAML structure wherever a template puts it. Values
/// without any such character (versions, images with or without a digest, numbers, URLs,
/// most words) are plain YAML text in any position, so rendering them costs no second
/// look.
fn is_hazardous(value: &str) -> bool {
    // Only blanks: in the last slot of a flow sequence they leave the slot out.
    (!value.is_empty() && value.trim().is_empty())
        || value.chars().any(hazardous_anywhere)
        || value.trim_start().starts_with(HAZARDOUS_FIRST)
        || value.contains(": ")
        || value.contains(" #")
        || value.ends_with(':')
}

/// `value` with every character that could carry structure replaced by `x` (the same
/// text otherwise, so templates that compare or filter values behave alike).
fn defang(value: &str) -> String {
    if value.trim().is_empty() {
        return "x".repeat(value.chars().count());
    }
    let first = value.len() - value.trim_start().len();
    let mut benign: String = value
        .char_indices()
        .map(|(at, c)| {
            if hazardous_anywhere(c) || (at == first && HAZARDOUS_FIRST.contains(&c)) {
                'x'
            } else {
                c
            }
        })
        .collect();
    benign = benign.replace(": ", "x ").replace(" #", " x");
    if benign.ends_with(':') {
        benign.pop();
        benign.push('x');
    }
    benign
}

/// The structure of rendered objects: each document's `apiVersion` and `kind`, and
/// every key path with whether a mapping, a list or a scalar is there.
/// One document's structure: its `apiVersion`, its `kind` and every key path with what
/// is there (`{` a mapping, `[` a list, `=` a scalar).
type DocumentShape = (String, String, Vec<(String, char)>);

fn shape(objects: &[Value]) -> Vec<DocumentShape> {
    fn walk(value: &Value, path: &mut String, out: &mut Vec<(String, char)>) {
        match value {
            Value::Object(map) => {
                out.push((path.clone(), '{'));
                for (key, child) in map {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                out.push((path.clone(), '['));
                for (index, child) in items.iter().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&index.to_string());
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            _ => out.push((path.clone(), '=')),
        }
    }
    objects
        .iter()
        .map(|object| {
            let text = |pointer: &str| {
                object
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut paths = Vec::new();
            walk(object, &mut String::new(), &mut paths);
            (text("/apiVersion"), text("/kind"), paths)
        })
        .collect()
}

/// The shape the template renders to with `variables`, or `None` when it does not
/// render to Kubernetes objects.
fn shape_with(
    template: &minijinja::Template<'_, '_>,
    variables: &TemplateVariables,
) -> Option<Vec<DocumentShape>> {
    let text = render_text(template, variables).ok()?;
    parse_objects(&text).ok().map(|objects| shape(&objects))
}

/// `variables` with every hazardous value defanged.
fn defanged(variables: &TemplateVariables) -> TemplateVariables {
    TemplateVariables(
        variables
            .0
            .iter()
            .map(|(name, value)| {
                let value = if is_hazardous(value) {
                    defang(value)
                } else {
                    value.clone()
                };
                (name.clone(), value)
            })
            .collect(),
    )
}

/// Why rendered text was not taken as the manifest.
enum Refused {
    /// It is not Kubernetes YAML, and not because of a value.
    NotKubernetes(String),
    /// These variables' values shape it.
    ValueChangesStructure(Vec<String>),
}

/// The objects of `text`, what the template rendered with `variables`, once it is
/// checked that no value shaped them: rendered again with every hazardous value
/// defanged, the template must give the same documents, kinds and key paths. When `text`
/// is not Kubernetes YAML but the defanged render is, a value broke it (a duplicate key,
/// a stray quote) and is named too.
///
/// Comparing against a render of the same template keeps templates that branch or loop
/// on values working, and only values that could carry structure cost a second render.
fn checked_objects(
    template: &minijinja::Template<'_, '_>,
    variables: &TemplateVariables,
    text: &str,
) -> Result<Vec<Value>, Refused> {
    let parsed = parse_objects(text);
    let hazardous: Vec<&String> = variables
        .0
        .iter()
        .filter(|(_, value)| is_hazardous(value))
        .map(|(name, _)| name)
        .collect();
    if hazardous.is_empty() {
        return parsed.map_err(Refused::NotKubernetes);
    }
    let benign = defanged(variables);
    let benign_shape = shape_with(template, &benign);
    match (parsed, &benign_shape) {
        (Ok(objects), Some(expected)) if shape(&objects) == *expected => return Ok(objects),
        (Err(error), None) => return Err(Refused::NotKubernetes(error)),
        _ => {}
    }
    // Which of them does it: each one alone among benign values.
    let mut culprits: Vec<String> = hazardous
        .iter()
        .filter(|name| {
            let mut alone = benign.clone();
            if let Some(value) = variables.0.get(**name) {
                alone.0.insert((**name).clone(), value.clone());
            }
            benign_shape.is_none() || shape_with(template, &alone) != benign_shape
        })
        .map(|name| (*name).clone())
        .collect();
    if culprits.is_empty() {
        culprits = hazardous.into_iter().cloned().collect();
    }
    Err(Refused::ValueChangesStructure(culprits))
}

fn describe(error: &minijinja::Error) -> String {
    match error.line() {
        Some(line) => format!(
            "line {line}: {}",
            error.detail().unwrap_or(&error.to_string())
        ),
        None => error.to_string(),
    }
}

const NUL_IN_MANIFEST: &str =
    "it holds the character U+0000 (NUL), which a manifest must not contain";

/// Whether a string or key anywhere in `value` holds U+0000.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => storable_text(text).is_err(),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| storable_text(key).is_err() || holds_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Parses rendered YAML into its objects, checking each is a Kubernetes object.
fn parse_objects(text: &str) -> Result<Vec<Value>, String> {
    // A manifest is stored as text and its objects as jsonb, and neither holds NUL;
    // a template can write one directly or through an escape (`"\0"` in YAML).
    if storable_text(text).is_err() {
        return Err(NUL_IN_MANIFEST.to_owned());
    }
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let objects: Vec<Value> = documents.into_iter().filter(|d| !d.is_null()).collect();
    if objects.iter().any(holds_nul) {
        return Err(NUL_IN_MANIFEST.to_owned());
    }
    if objects.is_empty() {
        return Err("it holds no YAML document".to_owned());
    }
    for (index, object) in objects.iter().enumerate() {
        let number = index + 1;
        if !object.is_object() {
            return Err(format!("document {number} is not a mapping"));
        }
        for (path, pointer) in [
            ("apiVersion", "/apiVersion"),
            ("kind", "/kind"),
            ("metadata.name", "/metadata/name"),
        ] {
            let present = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.trim().is_empty());
            if !present {
                return Err(format!(
                    "document {number} has no {path} (a non-empty string is required)"
                ));
            }
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release_variables() -> (ServiceName, Version, ImageRef, Attributes) {
        let attributes = Attributes::parse(
            "attributes",
            &BTreeMap::from([("replicas".to_owned(), "3".to_owned())]),
        )
        .expect("attributes");
        (
            ServiceName::parse("hello-world").expect("service"),
            Version::parse("1.2.3").expect("version"),
            ImageRef::parse("registry.local/hello-world:1.2.3").expect("image"),
            attributes,
        )
    }

    fn parse(source: &str) -> Result<ManifestTemplate, InvalidTemplate> {
        let (service, version, image, attributes) = release_variables();
        ManifestTemplate::parse(source, &service, &version, &image, &attributes)
    }

    #[test]
    fn a_template_that_holds_or_writes_nul_is_refused() {
        let config_map = |data: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  {data}\n")
        };
        assert_eq!(
            parse(&config_map("a: \"{# \0 #}\"")),
            Err(InvalidTemplate::Nul)
        );
        for data in [
            "a: \"\\0\"",
            "a: \"\\x00\"",
            "\"k\\u0000\": b",
            "a: \"{{ '\\u0000' }}\"",
        ] {
            assert!(
                matches!(parse(&config_map(data)), Err(InvalidTemplate::NotKubernetes(reason)) if reason.contains("U+0000")),
                "{data}"
            );
        }
        assert!(parse(&config_map("regex: '\\0'")).is_ok());
    }

    const ORIGINAL_STYLE: &str = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: \"{{service}}\"\n  labels:\n    version: \"{{version}}\"\nspec:\n  replicas: {{replicas}}\n  template:\n    spec:\n      containers:\n      - name: {{service}}\n        image: {{image}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{service}}\n";

    #[test]
    fn an_original_kubernaut_template_renders_unchanged() {
        let template = parse(ORIGINAL_STYLE).expect("accepted");
        assert!(template.required_variables().is_empty());
        let (service, version, image, attributes) = release_variables();
        let rendered = template
            .render(&TemplateVariables::for_release(
                &service,
                &version,
                &image,
                &attributes,
            ))
            .expect("renders");
        assert_eq!(rendered.objects.len(), 2);
        assert_eq!(
            rendered.objects[0].pointer("/spec/template/spec/containers/0/image"),
            Some(&Value::from("registry.local/hello-world:1.2.3"))
        );
        assert_eq!(
            rendered.objects[0].pointer("/spec/replicas"),
            Some(&Value::from(3))
        );
        assert_eq!(
            rendered.objects[1].pointer("/kind"),
            Some(&Value::from("Service"))
        );
    }

    #[test]
    fn conditionals_loops_and_filters_work() {
        let source = "{% for port in [80, 443] %}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ service | upper | lower }}-{{ port }}\n{% if replicas | int > 1 %}  labels:\n    ha: \"yes\"\n{% endif %}{% endfor %}";
        let template = parse(source).expect("accepted");
        let (service, version, image, attributes) = release_variables();
        let rendered = template
            .render(&TemplateVariables::for_release(
                &service,
                &version,
                &image,
                &attributes,
            ))
            .expect("renders");
        let names: Vec<_> = rendered
            .objects
            .iter()
            .filter_map(|o| o.pointer("/metadata/name"))
            .collect();
        assert_eq!(
            names,
            [
                &Value::from("hello-world-80"),
                &Value::from("hello-world-443")
            ]
        );
        assert_eq!(
            rendered.objects[0].pointer("/metadata/labels/ha"),
            Some(&Value::from("yes"))
        );
    }

    #[test]
    fn deploy_time_variables_are_recorded_and_demanded_by_name() {
        let source = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{service}}-{{ cluster }}\ndata:\n  ns: {{namespace}}\n  region: \"{{ region }}\"\n";
        let template = parse(source).expect("accepted with placeholders");
        let required: Vec<_> = template
            .required_variables()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(required, ["cluster", "namespace", "region"]);

        let (service, version, image, attributes) = release_variables();
        let mut variables = TemplateVariables::for_release(&service, &version, &image, &attributes);
        variables.set("cluster", "eu-1");
        assert_eq!(
            template.render(&variables),
            Err(RenderError::MissingVariables(vec![
                "namespace".into(),
                "region".into()
            ]))
        );
        variables.set("namespace", "shop");
        variables.set("region", "eu-west");
        let rendered = template.render(&variables).expect("renders");
        assert_eq!(
            rendered.objects[0].pointer("/metadata/name"),
            Some(&Value::from("hello-world-eu-1"))
        );
    }

    #[test]
    fn templates_that_are_not_kubernetes_yaml_are_refused_with_a_reason() {
        let cases = [
            ("", "must not be empty"),
            ("{% if %}", "does not compile"),
            (
                "{{ image | no_such_filter }}",
                "filter no_such_filter is unknown",
            ),
            ("key: [unclosed", "invalid YAML"),
            ("just a string", "not a mapping"),
            ("apiVersion: v1\nkind: Service\n", "metadata.name"),
            ("apiVersion: v1\nmetadata:\n  name: x\n", "kind"),
            ("# only a comment\n", "no YAML document"),
        ];
        for (source, expected) in cases {
            let error = parse(source).expect_err(source).to_string();
            assert!(error.contains(expected), "{source:?} gave {error:?}");
        }
    }

    #[test]
    fn a_template_over_one_mebibyte_is_refused() {
        let big = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n#{}",
            "x".repeat(ManifestTemplate::MAX_BYTES)
        );
        assert!(matches!(parse(&big), Err(InvalidTemplate::TooLarge(_))));
    }

    #[test]
    fn a_template_that_spins_runs_out_of_fuel() {
        let source = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n";
        let error = parse(source).expect_err("must stop").to_string();
        assert!(error.contains("fuel"), "{error}");
    }

    #[test]
    fn a_template_cannot_blow_up_its_output() {
        let source = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{ 'x' * 100000000 }}\n";
        assert!(parse(source).is_err());
    }

    #[test]
    fn a_template_cannot_include_files() {
        let source = "{% include '/etc/passwd' %}";
        assert!(parse(source).is_err());
    }

    #[test]
    fn attributes_with_dotted_names_are_reachable_through_the_attributes_map() {
        let attributes = Attributes::parse(
            "attributes",
            &BTreeMap::from([("team.name".to_owned(), "payments".to_owned())]),
        )
        .expect("attributes");
        let (service, version, image, _) = release_variables();
        let source =
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ attributes['team.name'] }}\n";
        let template = ManifestTemplate::parse(source, &service, &version, &image, &attributes)
            .expect("accepted");
        let rendered = template
            .render(&TemplateVariables::for_release(
                &service,
                &version,
                &image,
                &attributes,
            ))
            .expect("renders");
        assert_eq!(
            rendered.objects[0].pointer("/metadata/name"),
            Some(&Value::from("payments"))
        );
    }

    // Values cannot change the manifest's structure.

    /// A template holding `v` in each kind of YAML position a value can take.
    const POSITIONS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  labels: {team: {{ v }}, tier: web}\ndata:\n  plain: {{ v }}\n  double: \"{{ v }}\"\n  single: '{{ v }}'\n  list: [a, {{ v }}]\n  block:\n  - {{ v }}\n  - b\n";

    fn deploy_template(source: &str) -> ManifestTemplate {
        ManifestTemplate::from_trusted(source.to_owned(), BTreeSet::from(["v".to_owned()]))
    }

    fn render_with(
        template: &ManifestTemplate,
        value: &str,
    ) -> Result<RenderedManifest, RenderError> {
        let mut variables = TemplateVariables::default();
        variables.set("v", value);
        template.render(&variables)
    }

    #[test]
    fn a_value_that_adds_a_document_is_refused_naming_it() {
        let (service, version, image, attributes) = release_variables();
        let template =
            ManifestTemplate::parse(ORIGINAL_STYLE, &service, &version, &image, &attributes)
                .expect("accepted");
        let mut variables = TemplateVariables::for_release(&service, &version, &image, &attributes);
        variables.set(
            "replicas",
            "1\n---\napiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: PriorityLevelConfiguration\nmetadata:\n  name: starve\n",
        );
        assert_eq!(
            template.render(&variables),
            Err(RenderError::ValueChangesStructure(vec![
                "replicas".to_owned()
            ]))
        );
        // ... or that changes the image the release was checked with.
        variables.set("replicas", "1\n  template:\n    spec:\n      containers:\n      - name: x\n        image: evil/miner");
        assert_eq!(
            template.render(&variables),
            Err(RenderError::ValueChangesStructure(vec![
                "replicas".to_owned()
            ]))
        );
    }

    #[test]
    fn a_release_attribute_that_reshapes_the_manifest_is_refused_at_release_time() {
        let attributes = Attributes::parse(
            "attributes",
            &BTreeMap::from([("replicas".to_owned(), "2, evil: true".to_owned())]),
        )
        .expect("attributes");
        let (service, version, image, _) = release_variables();
        let source = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: {replicas: {{ replicas }}}\n";
        assert_eq!(
            ManifestTemplate::parse(source, &service, &version, &image, &attributes),
            Err(InvalidTemplate::ValueChangesStructure(vec![
                "replicas".to_owned()
            ]))
        );
    }

    #[test]
    fn values_that_only_look_dangerous_render_where_they_cannot_reshape_anything() {
        let template = deploy_template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  text: \"{{ v }}\"\n  config: |\n    {{ v | indent(4) }}\n",
        );
        for value in [
            "Hello, world",
            "fix #42: {braces} [brackets]",
            "line one\nline two: x",
        ] {
            let rendered = template.render(&{
                let mut variables = TemplateVariables::default();
                variables.set("v", value);
                variables
            });
            // A line break cannot sit in the double-quoted line, but it is no reshape
            // either: the value reads differently, with the same keys.
            let rendered = rendered.unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert!(rendered.objects[0].pointer("/data/config").is_some());
        }
        // Images with digests, URLs, versions: no second look needed.
        for plain in [
            "registry.local/app@sha256:abc",
            "https://example.com/a?b=c",
            "1.2.3+build.7",
            "50%",
        ] {
            assert!(!is_hazardous(plain), "{plain}");
        }
        for hazardous in [
            "a\nb", "a, b", "- x", "x: y", "x #y", "x:", "'", "\"", "&a", "*a", "!t",
        ] {
            assert!(is_hazardous(hazardous), "{hazardous}");
            assert!(!is_hazardous(&defang(hazardous)), "{hazardous} defanged");
        }
    }

    #[test]
    fn a_value_the_template_branches_on_still_renders() {
        let template = deploy_template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n{% if v == 'on' %}\n  enabled: \"yes\"\n{% endif %}\n  v: \"{{ v }}\"\n",
        );
        let on = render_with(&template, "on").expect("renders");
        assert!(on.objects[0].pointer("/data/enabled").is_some());
        let off = render_with(&template, "off, really").expect("renders");
        assert!(off.objects[0].pointer("/data/enabled").is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever a value is, the manifest has the documents, kinds and key paths it
        /// has with a benign value, or the value is refused, named.
        #[test]
        fn no_value_changes_the_structure_of_the_manifest(
            value in ".+",
            yamlish in "[ a-z0-9:#,'\"\\[\\]{}&*!|>%@`\n-]{1,24}",
        ) {
            let template = deploy_template(POSITIONS);
            let benign = shape(&render_with(&template, "benign").expect("renders").objects);
            for value in [value.as_str(), yamlish.as_str()] {
                match render_with(&template, value) {
                    Ok(rendered) => proptest::prop_assert_eq!(shape(&rendered.objects), benign.clone(), "{:?}", value),
                    Err(RenderError::ValueChangesStructure(names)) => {
                        proptest::prop_assert_eq!(names, vec!["v".to_owned()]);
                    }
                    Err(other) => proptest::prop_assert!(false, "{:?}: {}", value, other),
                }
            }
        }
    }
}

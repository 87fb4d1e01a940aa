//! Loading agent modules: validate, compile once, cache the compiled artifact on disk, and link
//! into an `InstancePre` so that starting an agent is only "instantiate + init".
//!
//! The cache key is the module's SHA-256 together with the engine's compatibility hash (wasmtime
//! version and every codegen-relevant setting), so a changed module, a new wasmtime or a changed
//! pool configuration each miss the cache instead of loading a stale artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};

use super::engine::{Class, Engines, INTERPRETER_SIZE};
use super::state::AgentState;
use crate::bindings::{self, AgentIndices, AgentPre};

/// The exports every agent component must have, as named in the `agent` world.
const REQUIRED_EXPORTS: [&str; 4] = ["init", "handle", "notify", "terminate"];
const WORLD: &str = "agora:agent/agent@0.3.2";
/// The optional export that carries an agent's state across upgrades (`wit/state.wit`).
const STATE_INTERFACE: &str = "agora:agent/state@0.3.2";
/// The optional export that takes several mailbox items per entry (0.3.2; [`super::batch`]).
const BATCH_EXPORT: &str = "handle-batch";

/// A module ready to instantiate.
pub struct LoadedModule {
    pub name: String,
    pub path: PathBuf,
    /// Which build of the module this is.
    pub version: Version,
    pub pre: AgentPre<AgentState>,
    /// Where the `agent` world's exports are, to load them from an instance.
    pub indices: AgentIndices,
    /// The `state` interface's exports, when the component has them.
    pub state: Option<StateExports>,
    /// `handle-batch`, when the component exports it (agents built for 0.3.0–0.3.1 do not, and
    /// get one callback per message).
    pub batch: Option<wasmtime::component::ComponentExportIndex>,
    pub cache: CacheOutcome,
    /// The most any of its memories needs at instantiation, in bytes: an agent's memory cap
    /// must allow it (an interpreter-bundling component starts with ~13 MB).
    pub initial_memory: u64,
    /// Which engine compiled it, and in which pool its instances live.
    pub class: Class,
    /// Its instantiation runs guest code (a core module's or the component's start function):
    /// it cannot be kept warm, since a warm instance must not have run any before its `init`.
    pub runs_at_instantiation: bool,
}

/// A module's version: its content hash, and the label the manifest or the operator gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// SHA-256 of the component's bytes, in hex.
    pub hash: String,
    pub label: Option<String>,
}

impl Version {
    /// `sha256:` and the first 12 hex digits: enough to tell builds apart in a listing.
    pub fn short_hash(&self) -> String {
        format!("sha256:{}", &self.hash[..12])
    }
}

/// Serialized as it is shown.
impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::fmt::Display for Version {
    /// The label if it has one, else the short hash: what `from-version` and `ps` show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.label {
            Some(label) => f.write_str(label),
            None => f.write_str(&self.short_hash()),
        }
    }
}

/// The `state` interface of a component: `snapshot` and `restore`.
#[derive(Clone, Copy)]
pub struct StateExports {
    pub snapshot: wasmtime::component::ComponentExportIndex,
    pub restore: wasmtime::component::ComponentExportIndex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Compiled now and written to the cache.
    Compiled,
    /// Loaded from an artifact compiled earlier.
    Hit,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Compiled => "miss",
            CacheOutcome::Hit => "hit",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read module {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a WebAssembly file (no \\0asm header)")]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core wasm module, not a component; build it for wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} is not a valid component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} does not implement the world {WORLD}: {reason}")]
    WrongWorld { path: PathBuf, reason: String },
    #[error("module cache {dir}: {source}")]
    Cache { dir: PathBuf, source: std::io::Error },
    #[error("{path} needs {needs}, more than the host's pool gives a component ({limit})")]
    TooBig { path: PathBuf, needs: String, limit: String },
}

/// One class's engine, and the linker of the host's interfaces for it.
struct ClassLoader {
    class: Class,
    engine: Engine,
    linker: Linker<AgentState>,
    /// The engine's compatibility hash: part of every artifact's name.
    engine_key: String,
}

impl ClassLoader {
    fn new(class: Class, engine: &Engine) -> anyhow::Result<ClassLoader> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        // The core's own interfaces, on the whole store; every other one is a capability's,
        // served on its view.
        bindings::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .and_then(|()| bindings::lifecycle::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state))
            .and_then(|()| super::batch::link(&mut linker))
            .and_then(|()| crate::capabilities::link(&mut linker))
            .map_err(|e| anyhow::anyhow!("linking the agora:agent interfaces: {e}"))?;
        let mut hasher = StableHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex(&hasher.0.finalize()[..8]);
        Ok(ClassLoader { class, engine: engine.clone(), linker, engine_key })
    }
}

/// Compiles and caches components, each for the engine of its class.
pub struct ModuleLoader {
    compact: ClassLoader,
    interpreter: ClassLoader,
    cache_dir: PathBuf,
    /// `host.max_memory`: no memory of any instance grows past it.
    max_memory: u64,
}

impl ModuleLoader {
    pub fn new(engines: &Engines, cache_dir: PathBuf, max_memory: u64) -> anyhow::Result<Self> {
        Ok(ModuleLoader {
            compact: ClassLoader::new(Class::Compact, &engines.compact)?,
            interpreter: ClassLoader::new(Class::Interpreter, &engines.interpreter)?,
            cache_dir,
            max_memory,
        })
    }

    fn class_of(&self, bytes: &[u8]) -> &ClassLoader {
        match Class::of(bytes) {
            Class::Compact => &self.compact,
            Class::Interpreter => &self.interpreter,
        }
    }

    /// Load one module: from the cache when a matching artifact exists, else compile it and
    /// store the artifact.
    pub fn load(&self, name: &str, path: &Path, label: Option<&str>) -> Result<LoadedModule, ModuleError> {
        let started = Instant::now();
        let Prepared { class, pre, state, batch, initial_memory, cache, hash, runs_at_instantiation } =
            self.prepare(path)?;
        let version = Version { hash, label: label.map(str::to_string) };
        tracing::info!(
            event = "module_loaded",
            module = name,
            version = %version,
            path = %path.display(),
            class = class.as_str(),
            cache = cache.as_str(),
            millis = started.elapsed().as_secs_f64() * 1e3,
            initial_memory,
            "module {name}@{version} loaded ({}, cache {}, {:.1} ms; starts with {} of memory)",
            class.as_str(),
            cache.as_str(),
            started.elapsed().as_secs_f64() * 1e3,
            crate::manifest::units::readable(initial_memory)
        );
        let indices = AgentIndices::new(pre.instance_pre())
            .map_err(|e| ModuleError::WrongWorld { path: path.into(), reason: format!("{e:#}") })?;
        Ok(LoadedModule {
            name: name.to_string(),
            path: path.into(),
            version,
            pre,
            indices,
            state,
            batch,
            cache,
            initial_memory,
            class,
            runs_at_instantiation,
        })
    }

    /// Compile into the cache, checked as a load checks it (the `agora compile` command).
    pub fn precompile(&self, path: &Path) -> Result<(PathBuf, CacheOutcome), ModuleError> {
        let bytes = std::fs::read(path).map_err(|source| ModuleError::Read { path: path.into(), source })?;
        let artifact = self.artifact_path(self.class_of(&bytes), &hex(&Sha256::digest(&bytes)));
        let prepared = self.prepare(path)?;
        Ok((artifact, prepared.cache))
    }

    /// Read, compile (or find in the cache), check and link a component. The artifact is
    /// written only once every check has passed, so a cache hit is always a component that
    /// passed them: a component of the wrong world is refused however often it is given.
    fn prepare(&self, path: &Path) -> Result<Prepared, ModuleError> {
        let bytes = std::fs::read(path).map_err(|source| ModuleError::Read { path: path.into(), source })?;
        check_header(path, &bytes)?;
        let class = self.class_of(&bytes);
        let hash = hex(&Sha256::digest(&bytes));
        let artifact = self.artifact_path(class, &hash);
        let (component, cache) = match load_artifact(class, &artifact) {
            Some(component) => (component, CacheOutcome::Hit),
            None => (self.compile(class, path, &bytes)?, CacheOutcome::Compiled),
        };
        let (pre, initial_memory) = self.check(class, path, &component)?;
        let state = state_exports(path, &component)?;
        let batch = batch_export(path, &component)?;
        if cache == CacheOutcome::Compiled {
            self.store(path, &component, &artifact)?;
        }
        let runs_at_instantiation = super::engine::has_start_function(&bytes);
        Ok(Prepared { class: class.class, pre, state, batch, initial_memory, cache, hash, runs_at_instantiation })
    }

    /// Every check a load makes of a compiled component: WIT version, exports, resources, and
    /// the imports the linker can satisfy.
    fn check(
        &self,
        class: &ClassLoader,
        path: &Path,
        component: &Component,
    ) -> Result<(AgentPre<AgentState>, u64), ModuleError> {
        check_version(&class.engine, path, component)?;
        check_exports(&class.engine, path, component)?;
        let initial_memory = check_resources(path, component, class.class, self.max_memory)?;
        let pre = class
            .linker
            .instantiate_pre(component)
            .and_then(AgentPre::new)
            .map_err(|e| ModuleError::WrongWorld { path: path.into(), reason: format!("{e:#}") })?;
        Ok((pre, initial_memory))
    }

    /// Check bytes as a load checks a file, without the cache (the module fuzz target).
    pub fn check_bytes(&self, bytes: &[u8]) -> Result<u64, ModuleError> {
        let path = Path::new("<bytes>");
        check_header(path, bytes)?;
        let class = self.class_of(bytes);
        let component = self.compile(class, path, bytes)?;
        let (_, initial_memory) = self.check(class, path, &component)?;
        state_exports(path, &component)?;
        batch_export(path, &component)?;
        Ok(initial_memory)
    }

    fn artifact_path(&self, class: &ClassLoader, module_hash: &str) -> PathBuf {
        self.cache_dir.join(format!("{module_hash}-{}.cwasm", class.engine_key))
    }

    fn compile(&self, class: &ClassLoader, path: &Path, bytes: &[u8]) -> Result<Component, ModuleError> {
        with_progress(path, bytes.len(), || Component::new(&class.engine, bytes))
            .map_err(|e| ModuleError::Invalid { path: path.into(), reason: format!("{e:#}") })
    }

    fn store(&self, path: &Path, component: &Component, artifact: &Path) -> Result<(), ModuleError> {
        let serialized = component
            .serialize()
            .map_err(|e| ModuleError::Invalid { path: path.into(), reason: format!("cannot serialize: {e}") })?;
        let cache_error = |source| ModuleError::Cache { dir: self.cache_dir.clone(), source };
        std::fs::create_dir_all(&self.cache_dir).map_err(cache_error)?;
        // Write then rename, so that a crash mid-write never leaves a truncated artifact.
        let temporary = artifact.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, &serialized).map_err(cache_error)?;
        std::fs::rename(&temporary, artifact).map_err(cache_error)?;
        Ok(())
    }
}

/// What `prepare` makes of a component file.
struct Prepared {
    class: Class,
    pre: AgentPre<AgentState>,
    state: Option<StateExports>,
    batch: Option<wasmtime::component::ComponentExportIndex>,
    initial_memory: u64,
    cache: CacheOutcome,
    hash: String,
    runs_at_instantiation: bool,
}

/// The `state` interface's functions, if the component exports the interface; an export of
/// that name without both functions is refused, rather than failing at the first upgrade.
/// (Their types are checked where they are called: a mismatch is a failed upgrade, reported.)
fn state_exports(path: &Path, component: &Component) -> Result<Option<StateExports>, ModuleError> {
    let Some(interface) = component.get_export_index(None, STATE_INTERFACE) else { return Ok(None) };
    let function = |name: &str| {
        component.get_export_index(Some(&interface), name).ok_or_else(|| ModuleError::WrongWorld {
            path: path.into(),
            reason: format!("it exports {STATE_INTERFACE} without `{name}`"),
        })
    };
    Ok(Some(StateExports { snapshot: function("snapshot")?, restore: function("restore")? }))
}

/// `handle-batch`, if the component exports it: a function of one parameter and no result, as
/// the `agent` world declares it (its exact type is checked at each instantiation).
fn batch_export(
    path: &Path,
    component: &Component,
) -> Result<Option<wasmtime::component::ComponentExportIndex>, ModuleError> {
    let Some((item, index)) = component.get_export(None, BATCH_EXPORT) else { return Ok(None) };
    let wrong =
        |why: &str| ModuleError::WrongWorld { path: path.into(), reason: format!("its `{BATCH_EXPORT}` export {why}") };
    match item {
        ComponentItem::ComponentFunc(func) if func.params().len() == 1 && func.results().len() == 0 => Ok(Some(index)),
        ComponentItem::ComponentFunc(_) => Err(wrong("is not `func(first: item)`, as the agent world declares it")),
        _ => Err(wrong("is not a function")),
    }
}

fn load_artifact(class: &ClassLoader, artifact: &Path) -> Option<Component> {
    if !artifact.is_file() {
        return None;
    }
    // SAFETY: the cache directory holds only artifacts this host serialized itself (written
    // to a temporary file and renamed into place), and their names bind them to this
    // engine's compatibility hash. wasmtime still checks the header and rejects mismatches.
    match unsafe { Component::deserialize_file(&class.engine, artifact) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(artifact = %artifact.display(), "ignoring an unusable cached artifact: {e}");
            None
        }
    }
}

/// Run `compile`; for a large component (an interpreter: seconds to compile), say so first and report every two seconds that it is
/// still going (wasmtime reports no progress of its own), so a first start does not look hung.
fn with_progress<T>(path: &Path, size: usize, compile: impl FnOnce() -> T) -> T {
    if size < INTERPRETER_SIZE {
        return compile();
    }
    let mib = size as f64 / (1 << 20) as f64;
    tracing::info!(event = "module_compiling", path = %path.display(), mib = format!("{mib:.1}"),
        "compiling a large component for the first time; later starts load it from the cache");
    let started = std::time::Instant::now();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(std::time::Duration::from_secs(2))
            {
                tracing::info!(event = "module_compiling", path = %path.display(),
                    seconds = started.elapsed().as_secs(), "still compiling");
            }
        });
        let compiled = compile();
        drop(done);
        compiled
    })
}

/// What a component needs at instantiation, against what a pool slot holds: a precise error at
/// load rather than a failed instantiation at every start. The largest initial memory, in bytes.
fn check_resources(path: &Path, component: &Component, class: Class, max_memory: u64) -> Result<u64, ModuleError> {
    const PAGE: u64 = 64 << 10;
    let Some(needs) = component.resources_required() else { return Ok(0) };
    let too_big = |needs: String, limit: String| Err(ModuleError::TooBig { path: path.into(), needs, limit });
    let pool = class.limits();
    if needs.num_memories > pool.memories {
        return too_big(format!("{} memories", needs.num_memories), format!("{}", pool.memories));
    }
    if needs.num_tables > pool.tables {
        return too_big(format!("{} tables", needs.num_tables), format!("{}", pool.tables));
    }
    if let Some(elements) = needs.max_initial_table_size.filter(|elements| *elements > pool.table_elements as u64) {
        return too_big(format!("a table of {elements} elements"), format!("{}", pool.table_elements));
    }
    let initial_memory = needs.max_initial_memory_size.unwrap_or(0).saturating_mul(PAGE);
    if initial_memory > max_memory {
        return too_big(
            format!("{} MiB of memory at start", initial_memory >> 20),
            format!("host.max_memory = {} MiB", max_memory >> 20),
        );
    }
    Ok(initial_memory)
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), ModuleError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(ModuleError::CoreModule { path: path.into() }),
        Some([0, b'a', b's', b'm', ..]) => Ok(()),
        _ => Err(ModuleError::NotWasm { path: path.into() }),
    }
}

/// Refuse a component built for another minor version of the `agora:agent` package (a 0.2
/// agent expects notices as text) with both versions, instead of a generic link error.
fn check_version(engine: &Engine, path: &Path, component: &Component) -> Result<(), ModuleError> {
    let ours = WORLD.rsplit_once('@').map_or("", |(_, version)| version);
    let minor = |version: &str| version.rsplit_once('.').map(|(minor, _)| minor.to_string());
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        let Some(version) = name.strip_prefix("agora:agent/").and_then(|rest| rest.split_once('@')).map(|(_, v)| v)
        else {
            continue;
        };
        // A later 0.3.y imports interfaces this host lacks: say so, not a generic link error.
        let patch = |version: &str| version.rsplit_once('.').and_then(|(_, patch)| patch.parse::<u32>().ok());
        if minor(version) == minor(ours) && patch(version) > patch(ours) {
            return Err(ModuleError::WrongWorld {
                path: path.into(),
                reason: format!(
                    "it was built for agora:agent@{version} (it imports {name}), newer than this host's \
                     agora:agent@{ours}: run it on a newer host, or rebuild it against this host's wit/"
                ),
            });
        }
        if minor(version) != minor(ours) {
            return Err(ModuleError::WrongWorld {
                path: path.into(),
                reason: format!(
                    "it was built for agora:agent@{version} (it imports {name}); this host serves agora:agent@{ours}: \
                     rebuild it against this host's wit/ (0.3 delivers host notices typed, to the `notify` export)"
                ),
            });
        }
    }
    Ok(())
}

/// Name the missing export instead of leaving it to a generic link error.
fn check_exports(engine: &Engine, path: &Path, component: &Component) -> Result<(), ModuleError> {
    let ty = component.component_type();
    let exports: Vec<(&str, ComponentItem)> = ty.exports(engine).map(|(name, item)| (name, item.ty)).collect();
    for required in REQUIRED_EXPORTS {
        match exports.iter().find(|(name, _)| *name == required) {
            Some((_, ComponentItem::ComponentFunc(_))) => {}
            Some(_) => {
                return Err(ModuleError::WrongWorld {
                    path: path.into(),
                    reason: format!("export `{required}` is not a function"),
                });
            }
            None => {
                let found: Vec<&str> = exports.iter().map(|(name, _)| *name).collect();
                return Err(ModuleError::WrongWorld {
                    path: path.into(),
                    reason: format!(
                        "missing export `{required}` (the component exports: {})",
                        if found.is_empty() { "nothing".to_string() } else { found.join(", ") }
                    ),
                });
            }
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `Hash` output into SHA-256, whose result is stable across processes and Rust versions
/// (unlike `DefaultHasher`).
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Shared handle to a loaded module.
pub type Module = Arc<LoadedModule>;

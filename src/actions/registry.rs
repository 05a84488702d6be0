//! The action registry: every action by name and version, which `apiVersion` picks, the
//! params `paramAdd` accepts, and the `documentation` object built once at start.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Action, SAFE_PARAMS, whole_number};
use crate::hooks::ActionMiddleware;

/// Why an action registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    EmptyName,
    /// The same name and version twice.
    Duplicate(String, u32),
    /// Two action middleware with one name.
    DuplicateMiddleware(String),
    /// An action names middleware that was not added.
    UnknownMiddleware {
        action: String,
        middleware: String,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::EmptyName => write!(f, "an action has an empty name"),
            RegistryError::Duplicate(n, v) => {
                write!(f, "action `{n}` version {v} is defined twice")
            }
            RegistryError::DuplicateMiddleware(n) => {
                write!(f, "action middleware `{n}` is added twice")
            }
            RegistryError::UnknownMiddleware { action, middleware } => write!(
                f,
                "action `{action}` asks for middleware `{middleware}`, which was not added"
            ),
        }
    }
}

/// All actions, by name, plus what `paramAdd` scrubbing needs.
pub struct Registry {
    /// Every version of each name, lowest first.
    by_name: HashMap<String, Vec<Arc<Action>>, foldhash::fast::RandomState>,
    /// Every input name of every action, plus the safe params.
    accepted_params: HashSet<String>,
    documentation: Value,
    /// `documentation` pre-encoded for the verb.
    documentation_json: String,
}

impl Registry {
    /// Every action, with the action middleware each one runs resolved: the global ones and
    /// those it names, by priority (ties in the order the middleware was added).
    pub fn new(
        actions: Vec<Action>,
        middleware: Vec<ActionMiddleware>,
    ) -> Result<Registry, RegistryError> {
        let mut names = HashSet::new();
        for m in &middleware {
            if !names.insert(m.name().to_owned()) {
                return Err(RegistryError::DuplicateMiddleware(m.name().to_owned()));
            }
        }
        let middleware: Vec<Arc<ActionMiddleware>> = middleware.into_iter().map(Arc::new).collect();
        // Looked up on every call; a fast hash (the keys are the server's own names).
        let mut by_name: HashMap<String, Vec<Arc<Action>>, foldhash::fast::RandomState> =
            HashMap::default();
        let mut accepted_params: HashSet<String> =
            SAFE_PARAMS.iter().map(|s| s.to_string()).collect();
        // Names in the order first registered, for the documentation.
        let mut order = Vec::new();
        for mut a in actions {
            if a.name.is_empty() {
                return Err(RegistryError::EmptyName);
            }
            if let Some(unknown) = a.middleware.iter().find(|n| !names.contains(n.as_str())) {
                return Err(RegistryError::UnknownMiddleware {
                    action: a.name.to_string(),
                    middleware: unknown.clone(),
                });
            }
            let mut chain: Vec<Arc<ActionMiddleware>> = middleware
                .iter()
                .filter(|m| m.is_global() || a.middleware.iter().any(|n| n == m.name()))
                .cloned()
                .collect();
            chain.sort_by_key(|m| m.priority_value());
            a.runs_inline = a.inline && chain.iter().all(|m| m.is_inline());
            a.chain = chain.into();
            let versions = by_name.entry(a.name.to_string()).or_insert_with(|| {
                order.push(a.name.to_string());
                Vec::new()
            });
            if versions.iter().any(|v| v.version == a.version) {
                return Err(RegistryError::Duplicate(a.name.to_string(), a.version));
            }
            accepted_params.extend(a.inputs.iter().map(|i| i.name.clone()));
            versions.push(Arc::new(a));
            versions.sort_by_key(|v| v.version);
        }
        let mut docs = Map::new();
        for name in order {
            let versions: Map<String, Value> = by_name[&name]
                .iter()
                .map(|a| (a.version.to_string(), a.documentation()))
                .collect();
            docs.insert(name, Value::Object(versions));
        }
        let documentation = Value::Object(docs);
        let documentation_json = documentation.to_string();
        Ok(Registry {
            by_name,
            accepted_params,
            documentation,
            documentation_json,
        })
    }

    /// The action for `name`, if `api_version` (when given) is its version. As in
    /// actionhero, `0`, `""`, `null` and `false` mean "not given" (the latest version); a
    /// number must be integral (`1.0` is `1`); a string must be the version's plain decimal
    /// text (`"01"` and `"+1"` name no version).
    pub fn find(&self, name: &str, api_version: Option<&Value>) -> Option<&Arc<Action>> {
        let versions = self.by_name.get(name)?;
        let wanted: Option<u32> = match api_version {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                // Plain decimal only: `"01"` and `"+1"` name no version.
                let v = s.parse::<u32>().ok().filter(|v| v.to_string() == *s)?;
                Some(v)
            }
            Some(n @ Value::Number(_)) => match whole_number(n)? {
                0 => None,
                v => Some(u32::try_from(v).ok()?),
            },
            Some(_) => return None,
        };
        match wanted {
            None => versions.last(),
            Some(v) => versions.iter().find(|a| a.version == v),
        }
    }

    /// Whether `paramAdd key` is allowed with scrubbing on.
    pub fn accepts_param(&self, key: &str) -> bool {
        self.accepted_params.contains(key)
    }

    pub fn documentation(&self) -> &Value {
        &self.documentation
    }

    pub fn documentation_json(&self) -> &str {
        &self.documentation_json
    }
}

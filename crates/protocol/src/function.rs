//! FunctionRequest / FunctionResponse: the remote function-execution protocol of
//! `POST /execute`, `POST /runsync` and the job routes on the engine.
//!
//! Field names follow the remote-execution protocol of RunPod's serverless workers
//! (`runpod-flash`'s `FunctionRequest`), so existing Python clients work unchanged;
//! runlog adds `log_key`, `log_config` and `timeout`. Where the newest client is
//! looser than a strict reading, runlog follows the client: `null` dependency lists
//! are empty, any `execution_type` but `"class"` is a function call, and runlog's
//! older name `serialization` is an alias of `serialization_format`. A JSON call's
//! result is answered in `json_result` (never `result`, which clients read as a
//! base64 cloudpickle string).
//!
//! ```
//! use runlog_protocol::function::{FunctionRequest, Serialization};
//! let req: FunctionRequest = serde_json::from_str(
//!     r#"{"function_name":"add","function_code":"def add(a, b): return a + b",
//!         "args":[1, 2],"serialization_format":"json","dependencies":null}"#,
//! ).unwrap();
//! assert_eq!(req.serialization, Serialization::Json);
//! assert!(req.dependencies.is_empty());
//! assert!(req.create_new_instance);
//! assert_eq!(req.method_name, "__call__");
//! ```

use crate::engine::LogConfig;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// What a request runs: a plain function, or a method of a class instance.
///
/// Read as RunPod's worker reads it: `"class"` is a class call and anything else
/// (another word, `null`) a function call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionType {
    /// Call `function_name` defined in `function_code`.
    #[default]
    Function,
    /// Call `method_name` on an instance of `class_name` defined in `class_code`.
    Class,
}

impl<'de> Deserialize<'de> for ExecutionType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word: Option<String> = Option::deserialize(d)?;
        Ok(match word.as_deref() {
            Some("class") => ExecutionType::Class,
            _ => ExecutionType::Function,
        })
    }
}

/// `null` read as the type's empty value (the newest client sends `null` lists).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// How arguments and results are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Serialization {
    /// Every argument and the result is a base64 string of cloudpickle bytes: what
    /// existing Python clients send.
    #[default]
    Cloudpickle,
    /// Arguments and result are plain JSON values, for clients in any language.
    Json,
}

fn default_true() -> bool {
    true
}

fn default_method() -> String {
    "__call__".to_owned()
}

/// A remote call: `POST /execute` body, or the `input` of a `POST /runsync` envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRequest {
    /// Name of the function to call (required for `execution_type: "function"`).
    #[serde(default)]
    pub function_name: Option<String>,
    /// Python source defining the function.
    #[serde(default)]
    pub function_code: Option<String>,
    /// Positional arguments (encoded per `serialization`).
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
    /// Keyword arguments (encoded per `serialization`).
    #[serde(default)]
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// pip requirement specs installed into the runtime before the call (`null`: none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub dependencies: Vec<String>,
    /// apt package names installed before the call (only when the engine allows apt;
    /// `null`: none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub system_dependencies: Vec<String>,
    /// Local module sources importable by this call only, keyed by relative POSIX
    /// path (`utils.py`, `helpers/__init__.py`); for a class, for its instance's life.
    #[serde(default, deserialize_with = "null_as_default")]
    pub modules: BTreeMap<String, String>,
    /// Function or class call.
    #[serde(default)]
    pub execution_type: ExecutionType,
    /// Name of the class (required for `execution_type: "class"`).
    #[serde(default)]
    pub class_name: Option<String>,
    /// Python source defining the class.
    #[serde(default)]
    pub class_code: Option<String>,
    /// Positional constructor arguments (encoded per `serialization`).
    #[serde(default)]
    pub constructor_args: Vec<serde_json::Value>,
    /// Keyword constructor arguments (encoded per `serialization`).
    #[serde(default)]
    pub constructor_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Method called on the instance.
    #[serde(default = "default_method")]
    pub method_name: String,
    /// Instance to use or create; generated as `<ClassName>_<8 hex>` when absent.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// `false` with a known `instance_id` reuses that instance (its state persists).
    #[serde(default = "default_true")]
    pub create_new_instance: bool,
    /// Install system and Python dependencies in parallel.
    #[serde(default = "default_true")]
    pub accelerate_downloads: bool,
    /// Encoding of arguments and result: `serialization_format` on the wire, runlog's
    /// older `serialization` accepted as an alias.
    #[serde(default, rename = "serialization_format", alias = "serialization")]
    pub serialization: Serialization,
    /// Stream this call's logs live under this key.
    #[serde(default)]
    pub log_key: Option<String>,
    /// Where to stream them (required with `log_key`).
    #[serde(default)]
    pub log_config: Option<LogConfig>,
    /// Time limit of the call itself, in seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
}

impl Default for FunctionRequest {
    fn default() -> Self {
        FunctionRequest {
            function_name: None,
            function_code: None,
            args: Vec::new(),
            kwargs: serde_json::Map::new(),
            dependencies: Vec::new(),
            system_dependencies: Vec::new(),
            modules: BTreeMap::new(),
            execution_type: ExecutionType::Function,
            class_name: None,
            class_code: None,
            constructor_args: Vec::new(),
            constructor_kwargs: serde_json::Map::new(),
            method_name: default_method(),
            instance_id: None,
            create_new_instance: true,
            accelerate_downloads: true,
            serialization: Serialization::Cloudpickle,
            log_key: None,
            log_config: None,
            timeout: None,
        }
    }
}

/// What the engine knows about a class instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance's class.
    pub class_name: String,
    /// When it was constructed (RFC 3339).
    pub created_at: String,
    /// Methods called on it so far, this call included.
    pub method_calls: u64,
    /// When it was last used (RFC 3339).
    pub last_used: String,
}

/// The answer to a [`FunctionRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionResponse {
    /// Whether the call returned normally.
    pub success: bool,
    /// The result as base64 cloudpickle; absent on failure and for JSON calls.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// The result of a `serialization_format: "json"` call, as plain JSON.
    #[serde(default)]
    pub json_result: Option<serde_json::Value>,
    /// On failure: a one-line cause, then the traceback or installer cause.
    #[serde(default)]
    pub error: Option<String>,
    /// This call's system log lines, a blank line, then the function's own output.
    #[serde(default)]
    pub stdout: Option<String>,
    /// The class instance used (class calls only).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// What the engine knows about that instance (class calls only).
    #[serde(default)]
    pub instance_info: Option<InstanceInfo>,
}

/// The serverless envelope of `POST /runsync`: `{"input": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunsyncRequest {
    /// The call.
    pub input: FunctionRequest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_existing_protocol() {
        let req: FunctionRequest =
            serde_json::from_str(r#"{"function_name":"f"}"#).expect("minimal request parses");
        assert_eq!(req.execution_type, ExecutionType::Function);
        assert_eq!(req.serialization, Serialization::Cloudpickle);
        assert_eq!(req.method_name, "__call__");
        assert!(req.create_new_instance);
        assert!(req.accelerate_downloads);
        assert!(req.args.is_empty() && req.kwargs.is_empty());
    }

    #[test]
    fn class_request_and_envelope_parse() {
        let env: RunsyncRequest = serde_json::from_str(
            r#"{"input":{"execution_type":"class","class_name":"C","class_code":"class C: pass",
                "create_new_instance":false,"instance_id":"C_0011aabb"}}"#,
        )
        .expect("envelope parses");
        assert_eq!(env.input.execution_type, ExecutionType::Class);
        assert!(!env.input.create_new_instance);
        assert_eq!(env.input.instance_id.as_deref(), Some("C_0011aabb"));
    }

    #[test]
    fn any_execution_type_but_class_is_a_function_call() {
        for body in [
            r#"{"execution_type":"lambda"}"#,
            r#"{"execution_type":null}"#,
            r#"{"execution_type":"function"}"#,
        ] {
            let req: FunctionRequest = serde_json::from_str(body).expect("parses");
            assert_eq!(req.execution_type, ExecutionType::Function, "{body}");
        }
        let err = serde_json::from_str::<FunctionRequest>(r#"{"execution_type":3}"#)
            .expect_err("not a string");
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn newest_client_fields_parse() {
        let req: FunctionRequest = serde_json::from_str(
            r#"{"function_name":"f","dependencies":null,"system_dependencies":null,
                "modules":{"utils.py":"X = 1"},"serialization_format":"json"}"#,
        )
        .expect("parses");
        assert!(req.dependencies.is_empty() && req.system_dependencies.is_empty());
        assert_eq!(
            req.modules.get("utils.py").map(String::as_str),
            Some("X = 1")
        );
        assert_eq!(req.serialization, Serialization::Json);
        let old: FunctionRequest =
            serde_json::from_str(r#"{"serialization":"json"}"#).expect("alias parses");
        assert_eq!(old.serialization, Serialization::Json);
        let err = serde_json::from_str::<FunctionRequest>(r#"{"serialization_format":"xml"}"#)
            .expect_err("unknown format");
        assert!(err.to_string().contains("xml"), "{err}");
    }

    #[test]
    fn response_field_names_are_the_wire_names() {
        let resp = FunctionResponse {
            success: true,
            result: Some(serde_json::json!(3)),
            stdout: Some("x".into()),
            ..FunctionResponse::default()
        };
        let v = serde_json::to_value(&resp).expect("serialises");
        for field in [
            "success",
            "result",
            "json_result",
            "error",
            "stdout",
            "instance_id",
            "instance_info",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
    }
}

//! What an Ollama API path is, which decides how the gateway handles it.

/// Ollama and OpenAI-compatible endpoints, grouped by how they are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OllamaEndpoint {
    /// Names a model in its JSON body: routed by model, counted.
    Model,
    /// `/api/tags`, merged across the pool.
    Tags,
    /// `/api/ps`, merged across the pool.
    Ps,
    /// `/api/version`, from any healthy instance.
    Version,
    /// `/v1/models`, merged.
    V1Models,
    /// `/v1/models/{model}`.
    V1Model(String),
    /// Pulling, pushing, creating, copying, deleting models (and blob uploads that feed them).
    Management,
    /// Not an Ollama path.
    Unknown,
}

pub fn classify(path: &str) -> OllamaEndpoint {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/api/chat"
        | "/api/generate"
        | "/api/embed"
        | "/api/embeddings"
        | "/api/show"
        | "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/v1/responses"
        | "/v1/messages" => OllamaEndpoint::Model,
        "/api/tags" => OllamaEndpoint::Tags,
        "/api/ps" => OllamaEndpoint::Ps,
        "/api/version" => OllamaEndpoint::Version,
        "/v1/models" => OllamaEndpoint::V1Models,
        "/api/pull" | "/api/push" | "/api/create" | "/api/copy" | "/api/delete" => {
            OllamaEndpoint::Management
        }
        p if p.starts_with("/api/blobs/") => OllamaEndpoint::Management,
        p => match p.strip_prefix("/v1/models/") {
            Some(model) if !model.is_empty() => OllamaEndpoint::V1Model(model.to_string()),
            _ => OllamaEndpoint::Unknown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(classify("/api/chat"), OllamaEndpoint::Model);
        assert_eq!(classify("/v1/chat/completions"), OllamaEndpoint::Model);
        assert_eq!(classify("/api/tags"), OllamaEndpoint::Tags);
        assert_eq!(classify("/api/pull"), OllamaEndpoint::Management);
        assert_eq!(
            classify("/api/blobs/sha256:abc"),
            OllamaEndpoint::Management
        );
        assert_eq!(
            classify("/v1/models/hf.co/a/b:Q4"),
            OllamaEndpoint::V1Model("hf.co/a/b:Q4".into())
        );
        assert_eq!(classify("/api/nope"), OllamaEndpoint::Unknown);
    }
}

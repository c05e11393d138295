pub mod backend;
pub mod certs;
pub mod fake_ollama;
pub mod gateway;
pub mod hostile;
pub mod jwt;
pub mod redis_server;
pub mod support;

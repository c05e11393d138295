pub mod certs;
pub mod fake_ollama;
pub mod gateway;
pub mod jwt;
pub mod support;
pub mod redis_server;
pub mod backend;

pub mod backend;
pub mod certs;
pub mod fake_ollama;
pub mod gateway;
pub mod jwt;
pub mod redis_server;
pub mod support;

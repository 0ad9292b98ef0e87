//! The HTTP server (actix-web): health endpoints now, the REST API and /metrics later.

pub mod health;

use actix_web::{App, HttpServer, web};
use mairust_actors::supervisor::Handles;

pub fn server(
    handles: Handles,
) -> std::io::Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>)> {
    let config = handles.config.clone();
    let data = web::Data::new(handles);
    let server =
        HttpServer::new(move || App::new().app_data(data.clone()).configure(health::routes))
            .workers(config.http.workers.max(1))
            // The ShutdownCoordinator owns the signals; `serve` stops this server itself.
            .disable_signals()
            .shutdown_timeout(5)
            .bind(&config.http.address)?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

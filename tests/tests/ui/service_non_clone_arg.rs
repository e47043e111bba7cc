use servicekit::service;

struct Connection;

#[service]
async fn uses(conn: Connection) {
    let _ = conn;
}

fn main() {}

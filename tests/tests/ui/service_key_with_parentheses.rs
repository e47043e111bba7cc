use servicekit::service;

#[service(after("db"))]
async fn api() {}

fn main() {}

use servicekit::service;

#[service(backoff = "10s..1s")]
async fn inverted() {}

fn main() {}

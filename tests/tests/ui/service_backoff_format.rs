use servicekit::service;

#[service(backoff = "100ms-10s")]
async fn dash() {}

fn main() {}

use servicekit::service;

#[service(backoff = "..1s")]
async fn svc() {}

fn main() {}

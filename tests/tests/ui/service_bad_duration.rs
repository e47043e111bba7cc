use servicekit::service;

#[service(shutdown_timeout = "5 seconds")]
async fn slow() {}

fn main() {}

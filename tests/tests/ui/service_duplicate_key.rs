use servicekit::service;

#[service(name = "a", name = "b")]
async fn twice() {}

fn main() {}

use servicekit::service;

#[service]
async unsafe fn svc() {}

fn main() {}

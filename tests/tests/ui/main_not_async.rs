#[servicekit::main]
fn main() {}

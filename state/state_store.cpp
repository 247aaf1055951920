// placeholder until the state store lands
namespace pim { int stateStorePlaceholder() { return 0; } }

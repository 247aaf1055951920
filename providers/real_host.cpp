// placeholder until RealHost lands
namespace pim { int realHostPlaceholder() { return 0; } }

#include "agent/validators.h"

namespace pim {

Status checkEntryId(std::string_view) { return Status::error(ErrorCode::kInternal, "not implemented"); }
Status checkUsername(std::string_view) { return Status::ok(); }
Result<PublicKey> parsePublicKey(std::string_view) { return Status::error(ErrorCode::kInternal, "not implemented"); }
Status checkCryptHash(std::string_view) { return Status::error(ErrorCode::kInternal, "not implemented"); }
Result<std::string> parseFolder(std::string_view) { return Status::error(ErrorCode::kInternal, "not implemented"); }
Result<Cidr> parseCidr(std::string_view t) { return Cidr{std::string(t)}; }
Result<int64_t> parseRfc3339(std::string_view) { return Status::error(ErrorCode::kInternal, "not implemented"); }

}  // namespace pim

"""Our inbound addresses: support@, support+TOKEN@ and the category addresses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipient:
    address: str  # as received, lowercased
    base: str  # without the +detail
    detail: str  # the reply token, or ""
    category: str | None


@dataclass(frozen=True)
class AddressBook:
    support: str
    categories: dict[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.support.rsplit("@", 1)[1]

    def reply_address(self, token: str) -> str:
        local, domain = self.support.rsplit("@", 1)
        return f"{local}+{token}@{domain}"

    def resolve(self, address: str) -> Recipient | None:
        """Which of our addresses this is, or None when it is not ours (refuse it)."""
        address = address.strip().strip("<>").lower()
        if address.count("@") != 1:
            return None
        local, domain = address.split("@")
        base_local, _, detail = local.partition("+")
        base = f"{base_local}@{domain}"
        if base == self.support:
            return Recipient(address, base, detail, None)
        if base in self.categories:
            return Recipient(address, base, detail, self.categories[base])
        return None

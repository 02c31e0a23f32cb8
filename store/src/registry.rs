//! The population-registry extract the RA checks people against: names,
//! birth dates, deaths.

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::now_secs;
use crate::rows;
use crate::{Result, Store};

/// One line of `muhr registry import`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryPerson {
    /// The person's PINFL, the registry's key.
    pub pinfl: String,
    /// As the registry spells it.
    pub surname: String,
    /// As the registry spells it.
    pub given_name: String,
    /// `None` when the person has none.
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// Date of death, `YYYY-MM-DD`; `None` while alive.
    pub deceased_on: Option<String>,
}

impl Store {
    /// Loads (or replaces) registry rows in one transaction, audited as one act.
    pub async fn import_registry(
        &self,
        people: &[RegistryPerson],
        event: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_secs();
        for p in people {
            sqlx::query(
                "INSERT INTO population_registry (pinfl, surname, given_name, patronymic, birth_date, \
                 deceased_on, imported_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (pinfl) DO UPDATE SET surname = excluded.surname, \
                 given_name = excluded.given_name, patronymic = excluded.patronymic, \
                 birth_date = excluded.birth_date, deceased_on = excluded.deceased_on, \
                 imported_at = excluded.imported_at",
            )
            .bind(&p.pinfl)
            .bind(&p.surname)
            .bind(&p.given_name)
            .bind(p.patronymic.clone())
            .bind(&p.birth_date)
            .bind(p.deceased_on.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What the registry holds on one person; `None` when the extract does not
    /// list them.
    pub async fn registry_person(&self, pinfl: &str) -> Result<Option<RegistryPerson>> {
        Ok(self.registry_people(&[pinfl]).await?.pop())
    }

    /// What the registry holds on any of these people, in one query per
    /// `rows::CHUNK` of them (a group of cards asks once, not per card).
    pub async fn registry_people(&self, pinfls: &[&str]) -> Result<Vec<RegistryPerson>> {
        let mut people = Vec::new();
        for chunk in pinfls.chunks(rows::CHUNK) {
            let sql = format!(
                "SELECT pinfl, surname, given_name, patronymic, birth_date, deceased_on \
                 FROM population_registry WHERE pinfl IN ({})",
                rows::list(rows::padded(chunk.len()), 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for p in chunk {
                q = q.bind(*p);
            }
            q = rows::bind_nulls(q, rows::padded(chunk.len()) - chunk.len(), &["text"]);
            for r in q.fetch_all(&self.pool).await? {
                people.push(RegistryPerson {
                    pinfl: r.try_get("pinfl")?,
                    surname: r.try_get("surname")?,
                    given_name: r.try_get("given_name")?,
                    patronymic: r.try_get("patronymic")?,
                    birth_date: r.try_get("birth_date")?,
                    deceased_on: r.try_get("deceased_on")?,
                });
            }
        }
        Ok(people)
    }
}

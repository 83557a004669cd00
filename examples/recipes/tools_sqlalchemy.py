"""A server-side tool that queries the app's database through Flask-SQLAlchemy."""

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_chatstream import ToolError, create_blueprint


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
chat = create_blueprint()


class Product(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    stock: Mapped[int]


@chat.tool
def stock_of(product: str) -> dict[str, object]:
    """How many of a product are in stock.

    Args:
        product: The product's name.
    """
    # Tools run inside the app context: db.session, current_app and g work as in a view.
    found = db.session.execute(db.select(Product).filter_by(name=product)).scalar_one_or_none()
    if found is None:
        raise ToolError(f"There is no product called {product!r}.")
    return {"product": found.name, "stock": found.stock}


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///shop.db"
    app.config.update(config or {})
    db.init_app(app)
    app.register_blueprint(chat, url_prefix="/api")
    with app.app_context():
        db.create_all()
    return app
